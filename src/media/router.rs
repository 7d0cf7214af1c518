//! What a SIP leg asks of the WebRTC router, and what it gets back: the media side's own
//! interface, so that `media` needs nothing of `webrtc` (the router takes these requests from
//! its own queue and answers on the channels they carry).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use str0m::media::MediaTime;
use tokio::sync::{mpsc, oneshot};

use crate::ids::{EndpointId, ParticipantId, SessionId};

/// Names a non-browser subscriber (a SIP leg's mixer input) in the router.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ExternalSubscriberId(pub u64);

/// A request of a SIP leg to the router, sent by a [`Forwarder`].
#[derive(Debug)]
pub enum LegRequest {
    /// A SIP leg publishes its audio: make its endpoint.
    Publish {
        /// Whose stream.
        participant: ParticipantId,
        /// In which session.
        session: SessionId,
        /// Where the endpoint's id goes.
        reply: oneshot::Sender<EndpointId>,
    },
    /// One 20 ms Opus frame of an external publisher (48 kHz RTP time).
    Frame {
        /// The stream.
        endpoint: EndpointId,
        /// Its RTP time.
        rtp_time: MediaTime,
        /// The Opus frame.
        data: Arc<[u8]>,
    },
    /// The external publisher is gone: its stream becomes unavailable.
    Unpublish {
        /// The stream.
        endpoint: EndpointId,
    },
    /// A bridge-mode leg ended: its stream stays, quiet, for the participant's next leg.
    Park {
        /// The stream.
        endpoint: EndpointId,
    },
    /// An external publisher's leg holds (`true`) or resumes the call.
    Muted {
        /// The stream.
        endpoint: EndpointId,
        /// Held.
        muted: bool,
    },
    /// A SIP leg receives what its participant hears, on `frames`.
    Subscribe {
        /// Who listens.
        participant: ParticipantId,
        /// In which session.
        session: SessionId,
        /// Where frames and tones go.
        frames: mpsc::Sender<ExternalMedia>,
        /// Where the subscriber's id goes.
        reply: oneshot::Sender<ExternalSubscriberId>,
    },
    /// The external subscriber is gone.
    Unsubscribe {
        /// The subscriber.
        subscriber: ExternalSubscriberId,
    },
    /// A DTMF tone from a SIP leg, for everyone in the session who hears its participant.
    Dtmf {
        /// The sender's session.
        session: SessionId,
        /// The sender.
        participant: ParticipantId,
        /// The tone.
        tone: char,
    },
}

/// What an external subscriber (a SIP leg) receives from the forwarder.
#[derive(Debug)]
pub enum ExternalMedia {
    /// A 20 ms Opus frame of a stream the subscriber's participant hears, shared by every
    /// subscriber; the leg's media worker decodes it once for all its legs that hear it
    /// ([`super::heard`]).
    Frame {
        /// The stream.
        endpoint: EndpointId,
        /// On the endpoint's continuous timeline, 48 kHz.
        rtp_time: MediaTime,
        /// The Opus frame, as the publisher sent it.
        data: Arc<[u8]>,
    },
    /// A DTMF tone from someone the participant hears.
    Dtmf {
        /// Who sent it.
        participant: ParticipantId,
        /// The tone: 0-9, *, #, A-D.
        tone: char,
    },
}

/// The media bridge's handle on the forwarder: publish a SIP leg's Opus, subscribe to what its
/// participant hears, exchange DTMF. Cheap to clone; every method is bounded (frames are
/// dropped, counted, when the forwarder's queue is full; never awaited on the media path).
#[derive(Clone, Debug)]
pub struct Forwarder {
    requests: mpsc::Sender<LegRequest>,
    dropped: Arc<AtomicU64>,
}

impl Forwarder {
    /// A handle sending on `requests`, the router's queue of SIP legs' requests.
    pub fn new(requests: mpsc::Sender<LegRequest>) -> Self {
        Self { requests, dropped: Arc::default() }
    }

    /// Makes an external publisher for `participant` in `session`; `None` when the forwarder
    /// is gone (shutting down).
    pub async fn publish(&self, participant: ParticipantId, session: SessionId) -> Option<EndpointId> {
        let (reply, answer) = oneshot::channel();
        self.requests.send(LegRequest::Publish { participant, session, reply }).await.ok()?;
        answer.await.ok()
    }

    /// Subscribes `participant` in `session` to what it hears: Opus frames and DTMF arrive on
    /// `frames`. `None` when the forwarder is gone.
    pub async fn subscribe(
        &self,
        participant: ParticipantId,
        session: SessionId,
        frames: mpsc::Sender<ExternalMedia>,
    ) -> Option<ExternalSubscriberId> {
        let (reply, answer) = oneshot::channel();
        self.requests.send(LegRequest::Subscribe { participant, session, frames, reply }).await.ok()?;
        answer.await.ok()
    }

    /// One 20 ms Opus frame of `endpoint`, fire and forget: `false` (and counted) when the
    /// forwarder's queue is full or it is gone.
    pub fn frame(&self, endpoint: EndpointId, rtp_time: MediaTime, data: Arc<[u8]>) -> bool {
        let sent = self.requests.try_send(LegRequest::Frame { endpoint, rtp_time, data }).is_ok();
        if !sent {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
        sent
    }

    /// A DTMF tone from `participant` (a SIP leg), for the devices and legs that hear it.
    pub fn dtmf(&self, session: SessionId, participant: ParticipantId, tone: char) -> bool {
        self.requests.try_send(LegRequest::Dtmf { session, participant, tone }).is_ok()
    }

    /// Removes an external publisher. Never waits: called from `Drop` too.
    pub fn unpublish(&self, endpoint: EndpointId) {
        let _ = self.requests.try_send(LegRequest::Unpublish { endpoint });
    }

    /// Keeps an external publisher's stream for the participant's next leg (bridge mode,
    /// CONTRACT §5): browsers keep their track, and the next [`Forwarder::publish`] of the same
    /// participant in the same session continues it. Never waits: called from `Drop` too.
    pub fn park(&self, endpoint: EndpointId) {
        let _ = self.requests.try_send(LegRequest::Park { endpoint });
    }

    /// The leg behind `endpoint` holds (`muted`) or resumes the call: devices show the stream
    /// muted. Never waits.
    pub fn set_muted(&self, endpoint: EndpointId, muted: bool) {
        let _ = self.requests.try_send(LegRequest::Muted { endpoint, muted });
    }

    /// Removes an external subscriber. Never waits: called from `Drop` too.
    pub fn unsubscribe(&self, subscriber: ExternalSubscriberId) {
        let _ = self.requests.try_send(LegRequest::Unsubscribe { subscriber });
    }

    /// Frames refused because the forwarder's queue was full, since start (all legs).
    pub fn frames_dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}
