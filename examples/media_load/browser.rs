//! Browsers for the load generator: one str0m peer per browser over a real UDP socket on
//! loopback, signalled over the daemon's WebSocket (`/v1/device`) as the SDK does: `hello` with
//! the participant's token, `publish` (audio), then an `answer` to every offer the server makes
//! as streams come and go. Each received Opus frame is decoded; a frame whose peak crosses the
//! burst threshold is a detection (which browser, which m-line, when), and the main thread
//! matches detections to the bursts the phones sent: the phone → browser latency. Each browser
//! also sends 20 ms Opus frames of its own (a quiet tone, encoded ahead), a loud burst once a
//! second half a second away from the phones' bursts; the phones time those: browser → phone.
//!
//! All browsers run as tasks of one tokio runtime on a thread of their own, so that they never
//! hold up the phones' timer loop. Every wait is bounded: the run's end stops them.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use codecs::opus::{MAX_PACKET_BYTES, OpusDecoder, OpusEncoder, OpusEncoderConfig, SampleRate};
use futures_util::{SinkExt as _, StreamExt as _};
use str0m::change::SdpOffer;
use str0m::format::Codec;
use str0m::media::{Frequency, MediaTime, Mid};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc};
use tokio::net::UdpSocket;
use tokio_tungstenite::tungstenite::Message;

/// A frame whose decoded peak crossed the threshold.
#[derive(Debug)]
pub struct Detection {
    /// Which browser (index in the order given).
    pub browser: usize,
    /// On which of its m-lines (one per stream it hears).
    pub mid: String,
    /// When the frame arrived.
    pub at: Instant,
}

/// A burst a browser sent.
#[derive(Debug)]
pub struct Sent {
    /// Which browser.
    pub browser: usize,
    /// When.
    pub at: Instant,
}

/// A burst once a second, at this frame of each 50: half a second from the phones' (frame 25).
const BURST_FRAME: u64 = 0;
/// Frames in the signal's cycle (1 s).
const CYCLE: u64 = 50;

/// What the browsers report when the run ends.
#[derive(Debug, Default)]
pub struct Report {
    /// Browsers whose media connected.
    pub connected: usize,
    /// Opus frames received, all browsers.
    pub frames: u64,
}

/// Starts one browser per token on a thread of its own; they run until `until`, sending
/// detections (peak ≥ `threshold`) on `detections`. The handle gives the report.
pub fn spawn(
    http: String,
    tokens: Vec<String>,
    threshold: u16,
    (start, until): (Instant, Instant),
    detections: mpsc::Sender<Detection>,
    bursts: mpsc::Sender<Sent>,
) -> std::thread::JoinHandle<Report> {
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
        runtime.block_on(async move {
            let tasks: Vec<_> = tokens
                .into_iter()
                .enumerate()
                .map(|(i, token)| {
                    let (http, detections, bursts) = (http.clone(), detections.clone(), bursts.clone());
                    tokio::spawn(async move {
                        let report = (detections, bursts);
                        match browser(i, &http, &token, threshold, (start, until), report).await {
                            Ok(r) => r,
                            Err(e) => {
                                eprintln!("browser {i}: {e}");
                                (false, 0)
                            }
                        }
                    })
                })
                .collect();
            let mut report = Report::default();
            for t in tasks {
                let (connected, frames) = t.await.unwrap_or((false, 0));
                report.connected += usize::from(connected);
                report.frames += frames;
            }
            report
        })
    })
}

/// One browser: signalling, ICE/DTLS/SRTP through str0m, decoding what it hears. Returns
/// whether it connected and the frames it received.
async fn browser(
    index: usize,
    http: &str,
    token: &str,
    threshold: u16,
    (start, until): (Instant, Instant),
    (detections, bursts): (mpsc::Sender<Detection>, mpsc::Sender<Sent>),
) -> Result<(bool, u64), String> {
    let cycle = signal_cycle(index)?;
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{http}/v1/device"))
        .await
        .map_err(|e| format!("WebSocket: {e}"))?;
    let hello = serde_json::json!({"type": "hello", "token": token, "sdkVersion": "media_load"});
    ws.send(Message::text(hello.to_string())).await.map_err(|e| e.to_string())?;
    let publish = serde_json::json!({"type": "publish", "requestId": 1, "audio": true});
    ws.send(Message::text(publish.to_string())).await.map_err(|e| e.to_string())?;
    let mut publish_mid: Option<Mid> = None;
    // Its frames on a 20 ms clock of its own, 10 ms off the run's start.
    let mut frame = 0u64;
    let frame_at = |f: u64| start + Duration::from_millis(10 + 20 * f);
    let socket = UdpSocket::bind("127.0.0.1:0").await.map_err(|e| e.to_string())?;
    let local = socket.local_addr().map_err(|e| e.to_string())?;
    let mut rtc = Rtc::builder().clear_codecs().enable_opus(true, false).build(Instant::now());
    rtc.add_local_candidate(Candidate::host(local, "udp").map_err(|e| e.to_string())?);
    let mut decoders: HashMap<Mid, OpusDecoder> = HashMap::new();
    let mut pcm = [0i16; 5_760];
    let mut buf = vec![0u8; 2_048];
    let (mut connected, mut frames) = (false, 0u64);
    let deadline = tokio::time::Instant::from_std(until);
    loop {
        // Everything str0m has to say, then wait for its timeout, a datagram or a message.
        let timeout = loop {
            match rtc.poll_output() {
                Ok(Output::Timeout(t)) => break t,
                Ok(Output::Transmit(t)) => {
                    let _ = socket.send_to(&t.contents, t.destination).await;
                }
                Ok(Output::Event(Event::Connected)) => connected = true,
                Ok(Output::Event(Event::MediaData(d))) => {
                    frames += 1;
                    let decoder = match decoders.entry(d.mid) {
                        Entry::Occupied(e) => e.into_mut(),
                        Entry::Vacant(e) => e.insert(OpusDecoder::new(SampleRate::Hz16000).map_err(|e| e.to_string())?),
                    };
                    let Ok(n) = decoder.decode(&d.data, &mut pcm) else { continue };
                    let peak = pcm[..n].iter().map(|s| s.unsigned_abs()).max().unwrap_or(0);
                    if peak >= threshold {
                        let _ =
                            detections.send(Detection { browser: index, mid: d.mid.to_string(), at: Instant::now() });
                    }
                }
                Ok(Output::Event(_)) => {}
                Err(e) => return Err(format!("str0m: {e}")),
            }
        };
        let wake = tokio::time::Instant::from_std(timeout.min(frame_at(frame)).max(Instant::now())).min(deadline);
        tokio::select! {
            () = tokio::time::sleep_until(wake) => {
                let now = Instant::now();
                if now >= until {
                    return Ok((connected, frames));
                }
                while frame_at(frame) <= now {
                    let pt = publish_mid.filter(|_| connected).and_then(|mid| {
                        let writer = rtc.writer(mid)?;
                        let pt = writer.payload_params().find(|p| p.spec().codec == Codec::Opus).map(|p| p.pt());
                        pt.map(|pt| (mid, pt))
                    });
                    if let Some((mid, pt)) = pt
                        && let Some(writer) = rtc.writer(mid)
                    {
                        let time = MediaTime::new(960 * frame, Frequency::FORTY_EIGHT_KHZ);
                        let data = cycle[(frame % CYCLE) as usize].clone();
                        if writer.write(pt, now, time, data).is_ok() && frame % CYCLE == BURST_FRAME {
                            let _ = bursts.send(Sent { browser: index, at: now });
                        }
                    }
                    frame += 1;
                }
                rtc.handle_input(Input::Timeout(now)).map_err(|e| e.to_string())?;
            }
            r = socket.recv_from(&mut buf) => {
                let (n, source) = r.map_err(|e| e.to_string())?;
                if let Ok(receive) = Receive::new(Protocol::Udp, source, local, &buf[..n]) {
                    rtc.handle_input(Input::Receive(Instant::now(), receive)).map_err(|e| e.to_string())?;
                }
            }
            m = ws.next() => match m {
                Some(Ok(Message::Text(text))) => {
                    let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
                    match v["type"].as_str() {
                        Some("offer") => {
                            let sdp = v["sdp"].as_str().ok_or("an offer without SDP")?;
                            let offer = SdpOffer::from_sdp_string(sdp).map_err(|e| e.to_string())?;
                            let answer = rtc.sdp_api().accept_offer(offer).map_err(|e| e.to_string())?;
                            if let Some(mid) = v["publishMid"].as_str() {
                                publish_mid = Some(Mid::from(mid));
                            }
                            let reply = serde_json::json!({"type": "answer", "sdp": answer.to_sdp_string()});
                            ws.send(Message::text(reply.to_string())).await.map_err(|e| e.to_string())?;
                        }
                        Some("error") => return Err(format!("the server said {text}")),
                        _ => {}
                    }
                }
                Some(Ok(Message::Close(frame))) => return Err(format!("closed: {frame:?}")),
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(format!("WebSocket: {e}")),
                None => return Err("WebSocket ended".into()),
            },
        }
    }
}

/// The 50 frames (1 s) browser `index` sends, encoded once: the phones' kind of quiet tone, its
/// burst at [`BURST_FRAME`].
fn signal_cycle(index: usize) -> Result<Vec<Arc<[u8]>>, String> {
    let mut encoder = OpusEncoder::new(SampleRate::Hz16000, OpusEncoderConfig::default()).map_err(|e| e.to_string())?;
    let mut phase = 0.0;
    let (mut pcm, mut out) = ([0i16; 320], [0u8; MAX_PACKET_BYTES]);
    (0..CYCLE)
        .map(|f| {
            super::signal(100 + index, f, f == BURST_FRAME, 16_000.0, &mut phase, &mut pcm);
            let n = encoder.encode(&pcm, &mut out).map_err(|e| e.to_string())?;
            Ok(Arc::from(&out[..n]))
        })
        .collect()
}
