//! Third-party media peers for the end-to-end tests: child processes (sipp, dumpcap,
//! gst-launch) behind guards that kill them by their own pid, a writer of Ethernet/IPv4/UDP/RTP
//! pcaps for sipp's `play_pcap_audio`, a dumpcap capture that is known to be running before the
//! call starts, and tshark's reading of a capture.

#![allow(dead_code, unreachable_pub, missing_docs)]

use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A tool a test needs and the Debian package that gives it (deps/test-packages.txt).
#[derive(Clone, Copy)]
pub struct Tool {
    pub path: &'static str,
    pub package: &'static str,
}

pub const SIPP: Tool = Tool { path: "/usr/bin/sipp", package: "sip-tester" };
pub const DUMPCAP: Tool = Tool { path: "/usr/bin/dumpcap", package: "tshark" };
pub const TSHARK: Tool = Tool { path: "/usr/bin/tshark", package: "tshark" };
pub const GST_LAUNCH: Tool = Tool { path: "/usr/bin/gst-launch-1.0", package: "gstreamer1.0-tools" };
pub const GST_INSPECT: Tool = Tool { path: "/usr/bin/gst-inspect-1.0", package: "gstreamer1.0-tools" };

pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("Uid:")).map(|l| l.split_whitespace().nth(1) == Some("0")))
        .unwrap_or(false)
}

/// True when every tool is there. A missing tool skips the test only for a non-root run (a
/// developer's machine); as root (CI, which installs deps/test-packages.txt) it fails.
pub fn have_tools(test: &str, tools: &[Tool]) -> bool {
    let missing: Vec<String> = tools
        .iter()
        .filter(|t| !Path::new(t.path).exists())
        .map(|t| format!("{} (Debian {})", t.path, t.package))
        .collect();
    if missing.is_empty() {
        return true;
    }
    let message = format!("{test}: missing {}; `make test-deps` installs deps/test-packages.txt", missing.join(", "));
    assert!(!is_root(), "{message}");
    eprintln!("SKIPPED {message}");
    false
}

/// True when GStreamer has every element (plugins come in several packages).
pub fn have_gst_elements(test: &str, elements: &[(&str, &str)]) -> bool {
    let missing: Vec<String> = elements
        .iter()
        .filter(|(e, _)| {
            !Command::new(GST_INSPECT.path)
                .arg(e)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
        .map(|(e, p)| format!("GStreamer element {e} (Debian {p})"))
        .collect();
    if missing.is_empty() {
        return true;
    }
    let message = format!("{test}: missing {}; `make test-deps` installs deps/test-packages.txt", missing.join(", "));
    assert!(!is_root(), "{message}");
    eprintln!("SKIPPED {message}");
    false
}

/// A child process killed by its own pid when the guard drops, pass or fail.
pub struct Proc {
    pub name: String,
    child: Option<Child>,
    status: Option<ExitStatus>,
    /// Where its stderr went, for failure messages.
    pub log: PathBuf,
}

impl Proc {
    /// Spawns `cmd` with stdout and stderr to `log`.
    pub fn spawn(name: &str, mut cmd: Command, log: &Path) -> Self {
        let out = std::fs::File::create(log).unwrap();
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("{name} did not start: {e}"));
        Self { name: name.to_string(), child: Some(child), status: None, log: log.to_path_buf() }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    pub fn try_status(&mut self) -> Option<ExitStatus> {
        if self.status.is_none()
            && let Some(c) = self.child.as_mut()
        {
            self.status = c.try_wait().unwrap();
        }
        self.status
    }

    /// Waits for the process to exit by itself, at most `limit`.
    pub fn wait(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(s) = self.try_status() {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not exit within {limit:?}; its output:\n{}",
                self.name,
                self.output()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM first (dumpcap and gst-launch then finish their files), SIGKILL when that
    /// takes more than a few seconds.
    pub fn stop(&mut self) {
        if self.try_status().is_some() {
            return;
        }
        let _ = Command::new("kill").args(["-s", "TERM", &self.pid().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.try_status().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill();
    }

    fn kill(&mut self) {
        // A child that already exited has been reaped: there is no pid left to kill.
        if let Some(mut c) = self.child.take()
            && self.status.is_none()
        {
            let _ = c.kill();
            self.status = c.wait().ok();
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Writes a classic pcap (Ethernet, IPv4, UDP) of RTP packets, one per `payloads` entry, 20 ms
/// apart. sipp's `play_pcap_audio` replays the RTP with its own addresses and ports, on the
/// packets' time stamps.
pub fn write_rtp_pcap(path: &Path, pt: u8, samples_per_packet: u32, payloads: &[Vec<u8>]) {
    let ssrc = 0x1c0d_e5e1u32;
    let packets: Vec<Vec<u8>> = payloads
        .iter()
        .enumerate()
        .map(|(i, payload)| {
            let mut rtp = Vec::with_capacity(12 + payload.len());
            rtp.push(0x80);
            rtp.push(pt | if i == 0 { 0x80 } else { 0 });
            rtp.extend((i as u16).wrapping_add(3000).to_be_bytes());
            rtp.extend((i as u32 * samples_per_packet).wrapping_add(80_000).to_be_bytes());
            rtp.extend(ssrc.to_be_bytes());
            rtp.extend(payload);
            rtp
        })
        .collect();
    write_udp_pcap(path, 40_002, &packets);
}

/// Writes a classic pcap (Ethernet, IPv4, UDP from 127.0.0.1:40000 to 127.0.0.1:`dport`) of
/// `datagrams`, 20 ms apart.
pub fn write_udp_pcap(path: &Path, dport: u16, datagrams: &[Vec<u8>]) {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    // Global header: magic, v2.4, UTC offset 0, accuracy 0, snaplen, LINKTYPE_ETHERNET.
    let mut header = Vec::new();
    header.extend(0xa1b2_c3d4u32.to_le_bytes());
    header.extend(2u16.to_le_bytes());
    header.extend(4u16.to_le_bytes());
    header.extend(0i32.to_le_bytes());
    header.extend(0u32.to_le_bytes());
    header.extend(65_535u32.to_le_bytes());
    header.extend(1u32.to_le_bytes());
    f.write_all(&header).unwrap();
    let (src, dst) = ([127, 0, 0, 1], [127, 0, 0, 1]);
    let sport = 40_000u16;
    for (i, datagram) in datagrams.iter().enumerate() {
        let udp_len = 8 + datagram.len();
        let mut udp = Vec::with_capacity(udp_len);
        udp.extend(sport.to_be_bytes());
        udp.extend(dport.to_be_bytes());
        udp.extend((udp_len as u16).to_be_bytes());
        // A zero UDP checksum means "none" over IPv4.
        udp.extend(0u16.to_be_bytes());
        udp.extend(datagram);
        let ip_len = 20 + udp_len;
        let mut ip = vec![0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 17, 0, 0];
        ip[2..4].copy_from_slice(&(ip_len as u16).to_be_bytes());
        ip[4..6].copy_from_slice(&(i as u16).to_be_bytes());
        ip.extend(src);
        ip.extend(dst);
        let sum = ipv4_checksum(&ip);
        ip[10..12].copy_from_slice(&sum.to_be_bytes());
        ip.extend(&udp);
        let mut frame = vec![0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 1, 0x08, 0x00];
        frame.extend(&ip);
        let micros = i as u64 * 20_000;
        let mut record = Vec::with_capacity(16 + frame.len());
        record.extend(((micros / 1_000_000) as u32 + 1_700_000_000).to_le_bytes());
        record.extend(((micros % 1_000_000) as u32).to_le_bytes());
        record.extend((frame.len() as u32).to_le_bytes());
        record.extend((frame.len() as u32).to_le_bytes());
        record.extend(&frame);
        f.write_all(&record).unwrap();
    }
    f.flush().unwrap();
}

fn ipv4_checksum(header: &[u8]) -> u16 {
    let mut sum: u32 = header.chunks(2).map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]))).sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// dumpcap on `lo` for the UDP datagrams sent to `port`, in classic pcap format (the format
/// every reader of captures takes), stopping by itself after `packets`.
pub struct Capture {
    pub proc: Proc,
    pub file: PathBuf,
    pub port: u16,
}

impl Capture {
    /// Returns once dumpcap says it is capturing, so nothing sent after this is missed.
    pub fn start(dir: &Path, port: u16, packets: u32) -> Self {
        let file = dir.join(format!("capture-{port}.pcap"));
        let log = dir.join(format!("dumpcap-{port}.log"));
        let mut child = Command::new(DUMPCAP.path)
            .args(["-i", "lo", "-P", "-q", "-f", &format!("udp dst port {port}"), "-c", &packets.to_string(), "-w"])
            .arg(&file)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("dumpcap starts (Debian tshark)");
        let stderr = child.stderr.take().unwrap();
        // The guard owns the child from here: a failed wait below still kills it.
        let proc = Proc { name: "dumpcap".into(), child: Some(child), status: None, log: log.clone() };
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut log = std::fs::File::create(&log).unwrap();
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = writeln!(log, "{line}");
                if line.contains("Capturing on") {
                    let _ = tx.send(());
                }
            }
        });
        if rx.recv_timeout(Duration::from_secs(15)).is_err() {
            panic!("dumpcap did not start capturing on lo within 15 s:\n{}", proc.output());
        }
        Self { proc, file, port }
    }

    /// Waits until dumpcap has its packets and exits, at most `limit`.
    pub fn finish(&mut self, limit: Duration) {
        let status = self.proc.wait(limit);
        assert!(status.success(), "dumpcap failed ({status}):\n{}", self.proc.output());
    }
}

/// One RTP packet as tshark read it.
#[derive(Debug, Clone)]
pub struct RtpPacket {
    pub pt: u8,
    pub seq: u16,
    pub ssrc: u32,
    pub payload: Vec<u8>,
}

/// Runs tshark with `args` on `file`; returns stdout, failing with stderr when it fails.
pub fn tshark(file: &Path, args: &[&str]) -> String {
    let out =
        Command::new(TSHARK.path).arg("-r").arg(file).args(args).stdin(Stdio::null()).output().expect("tshark runs");
    assert!(out.status.success(), "tshark {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// The RTP packets of a capture, the UDP port decoded as RTP.
pub fn rtp_packets(file: &Path, port: u16) -> Vec<RtpPacket> {
    let text = tshark(
        file,
        &[
            "-d",
            &format!("udp.port=={port},rtp"),
            "-Y",
            "rtp",
            "-T",
            "fields",
            "-E",
            "separator=/t",
            "-e",
            "rtp.p_type",
            "-e",
            "rtp.seq",
            "-e",
            "rtp.ssrc",
            "-e",
            "rtp.payload",
        ],
    );
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            assert_eq!(f.len(), 4, "tshark line {l:?}");
            let ssrc = f[2].trim_start_matches("0x");
            RtpPacket {
                pt: f[0].parse().unwrap(),
                seq: f[1].parse().unwrap(),
                ssrc: u32::from_str_radix(ssrc, 16).unwrap(),
                payload: hex(f[3]),
            }
        })
        .collect()
}

/// Bytes from tshark's hex (with or without ':' between bytes).
pub fn hex(text: &str) -> Vec<u8> {
    let digits: Vec<u8> = text.bytes().filter(u8::is_ascii_hexdigit).collect();
    digits.chunks(2).map(|p| u8::from_str_radix(std::str::from_utf8(p).unwrap(), 16).unwrap()).collect()
}

pub fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The UDP payloads of a capture, in order.
pub fn udp_payloads(file: &Path) -> Vec<Vec<u8>> {
    tshark(file, &["-T", "fields", "-e", "udp.payload"]).lines().filter(|l| !l.is_empty()).map(hex).collect()
}

/// Waits until something in this network namespace has bound UDP `port` on IPv4 (a
/// receiver's socket is open), at most `limit`, failing early if `owner` exits.
pub fn wait_udp_bound(port: u16, limit: Duration, owner: &mut Proc) {
    let needle = format!(":{port:04X} ");
    let deadline = Instant::now() + limit;
    loop {
        let table = std::fs::read_to_string("/proc/net/udp").unwrap_or_default();
        if table
            .lines()
            .skip(1)
            .any(|l| l.split_whitespace().nth(1).is_some_and(|local| format!("{local} ").ends_with(&needle)))
        {
            return;
        }
        assert!(owner.try_status().is_none(), "{} exited before binding UDP {port}:\n{}", owner.name, owner.output());
        assert!(
            Instant::now() < deadline,
            "{} did not bind UDP {port} within {limit:?}:\n{}",
            owner.name,
            owner.output()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
