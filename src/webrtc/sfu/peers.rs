//! Browser peers: adding and removing them, their publish requests, offers and answers, and
//! their ICE candidates.

use super::*;

impl Sfu {
    /// Adds a browser peer. Another peer of the same participant is replaced: it is removed and
    /// its device closed with [`CloseReason::Replaced`] (the newest tab wins).
    pub fn add_peer(&mut self, now: Instant, info: PeerInfo) -> Result<PeerId, SfuError> {
        if let Some(old) = self.by_participant.get(&info.participant).copied() {
            self.remove_peer(now, old, Some(CloseReason::Replaced));
        }
        let mut builder = Rtc::builder()
            .set_ice_lite(true)
            .clear_codecs()
            .enable_opus(true, false)
            .set_crypto_provider(self.crypto.clone());
        if let Some(cert) = &self.dtls_cert {
            builder = builder.set_dtls_cert(cert.clone());
        }
        let mut rtc = builder.build(now);
        for addr in &self.config.candidates {
            let c = Candidate::host(*addr, "udp").map_err(|_| SfuError::PeerSetup)?;
            rtc.add_local_candidate(c);
        }
        let id = PeerId(self.next_id);
        self.next_id += 1;
        self.by_participant.insert(info.participant.clone(), id);
        let info_session = info.session.clone();
        self.by_session.entry(info_session.clone()).or_default().peers.push(id);
        self.peers.insert(
            id,
            Peer {
                info,
                rtc,
                next_timeout: now,
                addrs: Vec::new(),
                last_rx: now,
                offered_at: None,
                connected: false,
                pending: None,
                sending: BTreeMap::new(),
                wanted: BTreeSet::new(),
                to_stop: Vec::new(),
                publish: PublishState::None,
                anchored: false,
                dirty: false,
            },
        );
        self.mark_dirty(id);
        self.events.push_back(SfuEvent::SubscriptionsStale { session: info_session, change: Change::Any });
        self.drive(now);
        Ok(id)
    }

    /// Removes a peer: its socket is closed with `reason` (none when the socket is already
    /// gone), its streams are orphaned for the reconnect grace, and it stops receiving.
    pub fn remove_peer(&mut self, now: Instant, peer: PeerId, reason: Option<CloseReason>) {
        let Some(mut p) = self.peers.remove(&peer) else { return };
        self.unindex(&p.info.session.clone(), |i| i.peers.retain(|q| *q != peer));
        p.rtc.disconnect();
        for a in &p.addrs {
            if self.by_addr.get(a) == Some(&peer) {
                self.by_addr.remove(a);
            }
        }
        if self.by_participant.get(&p.info.participant) == Some(&peer) {
            self.by_participant.remove(&p.info.participant);
        }
        if let PublishState::Active { endpoint, .. } = &p.publish
            && let Some(e) = self.endpoints.get_mut(endpoint)
        {
            let at = now + self.config.reconnect_grace;
            e.source = Source::Orphaned(at);
            self.orphans_due = Some(self.orphans_due.map_or(at, |d| d.min(at)));
        }
        // Only its session's streams can name it (`refresh_subscriptions`).
        let streams: Vec<EndpointId> =
            self.by_session.get(&p.info.session).map(|i| i.streams().cloned().collect()).unwrap_or_default();
        for id in streams {
            if let Some(e) = self.endpoints.get_mut(&id) {
                e.targets.retain(|t| !matches!(t, Target::Peer { peer: q, .. } if *q == peer));
            }
        }
        if let Some(reason) = reason {
            self.events.push_back(SfuEvent::CloseDevice(peer, reason));
        }
        self.events.push_back(SfuEvent::SubscriptionsStale { session: p.info.session.clone(), change: Change::Any });
        tracing::debug!(peer = peer.0, participant = %p.info.participant, ?reason, "peer removed");
    }

    /// A device asks to publish.
    pub fn handle_publish(&mut self, now: Instant, peer: PeerId, request_id: u32, audio: bool, video: bool) {
        let Some(p) = self.peers.get_mut(&peer) else { return };
        let refuse =
            |code, message: &str| SfuEvent::ToDevice(peer, ServerMessage::error(code, message, Some(request_id)));
        for (asked, kind, name) in [(audio, MediaType::Audio, "AUDIO"), (video, MediaType::Video, "VIDEO")] {
            if asked && !p.info.permissions.contains(&kind) {
                let msg = format!("this participant's publishPermissions do not include {name}");
                self.events.push_back(refuse(ErrorCode::PermissionDenied, &msg));
                return;
            }
        }
        if video {
            self.events.push_back(refuse(ErrorCode::Unsupported, "this gateway forwards audio only"));
            return;
        }
        if !audio {
            self.events.push_back(refuse(ErrorCode::InvalidArgument, "nothing to publish: set audio"));
            return;
        }
        match &p.publish {
            PublishState::Active { mid, endpoint } => {
                let stream = stream_info(endpoint, &p.info.participant, *mid, false);
                self.events.push_back(SfuEvent::ToDevice(peer, ServerMessage::Published { request_id, stream }));
            }
            PublishState::Wanted(_) | PublishState::Offered => {
                self.events.push_back(refuse(ErrorCode::OutOfOrder, "a publish is already in progress"));
            }
            PublishState::None => {
                p.publish = PublishState::Wanted(request_id);
                self.negotiate(now, peer);
            }
        }
    }

    /// A device stops publishing. Its stream becomes unavailable to subscribers at once.
    pub fn handle_unpublish(&mut self, now: Instant, peer: PeerId, request_id: u32) {
        let Some(p) = self.peers.get_mut(&peer) else { return };
        match std::mem::replace(&mut p.publish, PublishState::None) {
            PublishState::Active { mid, endpoint } => {
                p.to_stop.push(mid);
                self.remove_endpoint(now, &endpoint);
                self.negotiate(now, peer);
            }
            PublishState::Offered => {
                // The answer will find no publish wanted and stop the m-line.
            }
            PublishState::Wanted(_) | PublishState::None => {}
        }
        self.events.push_back(SfuEvent::ToDevice(peer, ServerMessage::Unpublished { request_id }));
    }

    /// A device's SDP answer to the offer that is out.
    pub fn handle_answer(&mut self, now: Instant, peer: PeerId, sdp: &str) {
        let Some(p) = self.peers.get_mut(&peer) else { return };
        let Some(pending) = p.pending.take() else {
            let e = ServerMessage::error(ErrorCode::OutOfOrder, "no offer is waiting for an answer", None);
            self.events.push_back(SfuEvent::ToDevice(peer, e));
            return;
        };
        let answer = match SdpAnswer::from_sdp_string(sdp) {
            Ok(a) => a,
            Err(e) => {
                // The offer stays out: a corrected answer may still come.
                p.pending = Some(pending);
                let e = ServerMessage::error(ErrorCode::InvalidArgument, format!("the answer is not SDP: {e}"), None);
                self.events.push_back(SfuEvent::ToDevice(peer, e));
                return;
            }
        };
        if let Err(e) = p.rtc.sdp_api().accept_answer(pending.offer, answer) {
            tracing::debug!(peer = peer.0, error = %e, "answer refused");
            self.remove_peer(now, peer, Some(CloseReason::MediaFailed));
            return;
        }
        self.mark_dirty(peer);
        // Streams whose m-lines are now negotiated start flowing.
        for (endpoint, mid) in pending.added {
            let Some(p) = self.peers.get_mut(&peer) else { return };
            let still = p.sending.get_mut(&endpoint).filter(|s| s.mid == mid);
            let Some(slot) = still else { continue };
            let Some(e) = self.endpoints.get_mut(&endpoint) else { continue };
            slot.active = true;
            e.targets.push(Target::Peer { peer, mid, pt: None });
            let info = stream_info(&endpoint, &e.participant, mid, e.muted);
            self.events.push_back(SfuEvent::ToDevice(peer, ServerMessage::StreamAvailable(info)));
        }
        if let Some((mid, request_id)) = pending.publish {
            self.activate_publish(now, peer, mid, request_id);
        }
        self.negotiate(now, peer);
        self.drive(now);
    }

    /// A trickled candidate of the browser. Not needed (the server is ICE-lite and learns the
    /// browser's addresses from its checks) but used when given.
    pub fn handle_candidate(&mut self, now: Instant, peer: PeerId, candidate: &str) {
        let Some(p) = self.peers.get_mut(&peer) else { return };
        let text = candidate.trim();
        if text.is_empty() {
            return;
        }
        let text = text.strip_prefix("a=").unwrap_or(text);
        if let Ok(c) = Candidate::from_sdp_string(text) {
            p.rtc.add_remote_candidate(c);
            self.mark_dirty(peer);
            self.drive(now);
        }
    }

    /// DTMF tones from a device: checked here, delivered by [`Sfu::fan_out_dtmf`].
    pub fn handle_dtmf(&mut self, peer: PeerId, tones: &str) {
        let Some(p) = self.peers.get(&peer) else { return };
        if tones.is_empty()
            || tones.chars().count() > crate::webrtc::protocol::MAX_DTMF_TONES
            || !tones.chars().all(is_dtmf_tone)
        {
            let e = ServerMessage::error(
                ErrorCode::InvalidArgument,
                format!("tones must be 1 to {} of 0-9 * # A-D", crate::webrtc::protocol::MAX_DTMF_TONES),
                None,
            );
            self.events.push_back(SfuEvent::ToDevice(peer, e));
            return;
        }
        for tone in tones.chars() {
            self.events.push_back(SfuEvent::Dtmf {
                session: p.info.session.clone(),
                participant: p.info.participant.clone(),
                tone,
            });
        }
    }

    /// Delivers a tone from `participant` to every device and external subscriber in `session`
    /// that hears it.
    pub fn fan_out_dtmf(
        &mut self,
        session: &SessionId,
        participant: &ParticipantId,
        tone: char,
        mut hears: impl FnMut(&ParticipantId) -> bool,
    ) {
        for (id, p) in &self.peers {
            if &p.info.session == session && hears(&p.info.participant) {
                let m = ServerMessage::Dtmf { participant_id: participant.to_string(), tone };
                self.events.push_back(SfuEvent::ToDevice(*id, m));
            }
        }
        for (id, s) in &self.externals {
            if &s.session == session && hears(&s.participant) {
                self.events.push_back(SfuEvent::ExternalDtmf {
                    subscriber: *id,
                    participant: participant.clone(),
                    tone,
                });
            }
        }
    }
}
