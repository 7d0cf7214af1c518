//! Who receives which stream: full and session-scoped refreshes against the rooms, targeted
//! changes for a SIP leg's new stream or mixer, and the offers that follow.

use super::*;

impl Sfu {
    /// Recomputes what every peer and external subscriber receives: the endpoints of its
    /// session whose publisher it hears (`hears(session, listener, publisher)`, from the rooms).
    /// Streams it no longer hears become unavailable at once; new ones come with the next offer.
    pub fn refresh_subscriptions(
        &mut self,
        now: Instant,
        scope: Scope<'_>,
        mut hears: impl FnMut(&SessionId, &ParticipantId, &ParticipantId) -> bool,
    ) {
        // Streams by session, so that each listener only looks at its own session's: the work
        // is the sum over the sessions in scope of listeners × streams there, not every
        // listener × every stream of the node.
        let mut streams: HashMap<&SessionId, Vec<(&EndpointId, &ParticipantId, bool)>> = HashMap::new();
        for (eid, e) in self.scoped_endpoints(scope) {
            streams.entry(&e.session).or_default().push((eid, &e.participant, e.source == Source::Parked));
        }
        let mut wanted_by = |session: &SessionId, listener: &ParticipantId, parked_too: bool| -> BTreeSet<EndpointId> {
            streams
                .get(session)
                .into_iter()
                .flatten()
                .filter(|(_, _, parked)| parked_too || !parked)
                // Never one's own stream, whatever the rooms say.
                .filter(|(_, publisher, _)| *publisher != listener && hears(session, listener, publisher))
                .map(|(eid, _, _)| (*eid).clone())
                .collect()
        };
        let peers: Vec<(PeerId, BTreeSet<EndpointId>)> = self
            .scoped_peers(scope)
            .map(|(id, p)| (*id, wanted_by(&p.info.session, &p.info.participant, true)))
            .filter(|(id, wanted)| self.peers.get(id).is_some_and(|p| *wanted != p.wanted))
            .collect();
        let externals: Vec<(ExternalSubscriberId, BTreeSet<EndpointId>)> =
            self.scoped_externals(scope).map(|(id, s)| (*id, wanted_by(&s.session, &s.participant, false))).collect();
        for (id, wanted) in peers {
            self.set_wanted(now, id, wanted);
        }
        for (id, wanted) in externals {
            let Some(s) = self.externals.get_mut(&id) else { continue };
            let before = std::mem::replace(&mut s.wanted, wanted);
            let target = Target::External(id);
            for eid in before.iter().filter(|e| !s.wanted.contains(*e)) {
                if let Some(e) = self.endpoints.get_mut(eid) {
                    e.targets.retain(|t| *t != target);
                }
            }
            // Only what changed: a stream's targets name this subscriber exactly when its
            // `wanted` does (a removed stream leaves every `wanted`, ids are never reused, and
            // parking a stream takes it out of every external subscriber's).
            for eid in s.wanted.iter().filter(|e| !before.contains(*e)) {
                if let Some(e) = self.endpoints.get_mut(eid) {
                    e.targets.push(target);
                }
            }
        }
        self.drive(now);
    }

    /// The listeners and publishers a targeted change brings together, for the rooms check
    /// (as [`Sfu::listeners`] and [`Sfu::publishers`] do for a scope); empty for
    /// [`Change::Any`] and for what is gone.
    #[allow(clippy::type_complexity)]
    pub fn change_pairs(&self, change: &Change) -> (Vec<(SessionId, ParticipantId)>, Vec<(SessionId, ParticipantId)>) {
        match change {
            Change::Any => (Vec::new(), Vec::new()),
            Change::Stream(endpoint) => match self.endpoints.get(endpoint) {
                Some(e) => (
                    self.listeners(Scope::Sessions(std::slice::from_ref(&e.session))),
                    vec![(e.session.clone(), e.participant.clone())],
                ),
                None => (Vec::new(), Vec::new()),
            },
            Change::Subscriber(id) => match self.externals.get(id) {
                Some(s) => (vec![(s.session.clone(), s.participant.clone())], self.flowing_publishers(&s.session)),
                None => (Vec::new(), Vec::new()),
            },
        }
    }

    /// Applies a targeted change: a new stream goes to who hears its publisher, a new external
    /// subscriber gets what it hears; the rest of the session is left as it is. The work is
    /// one pass over the session, where [`Sfu::refresh_subscriptions`] compares every listener
    /// with every stream: a wave of SIP legs joining a session of a few dozen would otherwise
    /// pay the square at every join. [`Change::Any`] does nothing here.
    pub fn apply_change(
        &mut self,
        now: Instant,
        change: &Change,
        mut hears: impl FnMut(&SessionId, &ParticipantId, &ParticipantId) -> bool,
    ) {
        match change {
            Change::Any => {}
            Change::Stream(endpoint) => {
                let Some(e) = self.endpoints.get(endpoint) else { return };
                let (session, publisher) = (e.session.clone(), e.participant.clone());
                let (peers, externals) =
                    self.by_session.get(&session).map(|i| (i.peers.clone(), i.externals.clone())).unwrap_or_default();
                for id in peers {
                    let Some(p) = self.peers.get(&id) else { continue };
                    if p.info.participant == publisher
                        || p.wanted.contains(endpoint)
                        || !hears(&session, &p.info.participant, &publisher)
                    {
                        continue;
                    }
                    let mut wanted = p.wanted.clone();
                    wanted.insert(endpoint.clone());
                    self.set_wanted(now, id, wanted);
                }
                for id in externals {
                    let Some(s) = self.externals.get_mut(&id) else { continue };
                    if s.participant == publisher
                        || s.wanted.contains(endpoint)
                        || !hears(&session, &s.participant, &publisher)
                    {
                        continue;
                    }
                    s.wanted.insert(endpoint.clone());
                    if let Some(e) = self.endpoints.get_mut(endpoint) {
                        e.targets.push(Target::External(id));
                    }
                }
            }
            Change::Subscriber(id) => {
                let Some(s) = self.externals.get(id) else { return };
                // Parked streams are left out: they join the mix when they flow again.
                let heard: Vec<EndpointId> = self
                    .by_session
                    .get(&s.session)
                    .into_iter()
                    .flat_map(|i| i.endpoints.iter())
                    .filter(|eid| {
                        self.endpoints.get(*eid).is_some_and(|e| {
                            e.participant != s.participant
                                && !s.wanted.contains(*eid)
                                && hears(&s.session, &s.participant, &e.participant)
                        })
                    })
                    .cloned()
                    .collect();
                for eid in heard {
                    if let Some(e) = self.endpoints.get_mut(&eid) {
                        e.targets.push(Target::External(*id));
                    }
                    if let Some(s) = self.externals.get_mut(id) {
                        s.wanted.insert(eid);
                    }
                }
            }
        }
        self.drive(now);
    }

    pub(super) fn set_wanted(&mut self, now: Instant, peer: PeerId, wanted: BTreeSet<EndpointId>) {
        let Some(p) = self.peers.get_mut(&peer) else { return };
        let gone: Vec<EndpointId> = p.sending.keys().filter(|e| !wanted.contains(*e)).cloned().collect();
        for endpoint in gone {
            if let Some(slot) = p.sending.remove(&endpoint) {
                p.to_stop.push(slot.mid);
                if slot.active {
                    let m = ServerMessage::StreamUnavailable { endpoint_id: endpoint.0.to_string() };
                    self.events.push_back(SfuEvent::ToDevice(peer, m));
                }
            }
            if let Some(e) = self.endpoints.get_mut(&endpoint) {
                e.targets.retain(|t| !matches!(t, Target::Peer { peer: q, .. } if *q == peer));
            }
        }
        p.wanted = wanted;
        self.negotiate(now, peer);
    }

    /// Makes and sends the next offer of `peer` if something changed and none is out.
    pub(super) fn negotiate(&mut self, now: Instant, peer: PeerId) {
        let Some(p) = self.peers.get_mut(&peer) else { return };
        if p.pending.is_some() {
            return;
        }
        let mut api = p.rtc.sdp_api();
        // The first offer starts with an inactive audio m-line that is never used nor stopped:
        // it carries the BUNDLE tag, so stopping every stream m-line (the participant hears
        // nobody for a while) keeps the BUNDLE group, ICE and DTLS up, as browsers require. (A
        // data channel would do too, but Chromium aborts an SCTP association it did not ask for.)
        if !p.anchored && (!p.wanted.is_empty() || matches!(p.publish, PublishState::Wanted(_))) {
            api.add_media(MediaKind::Audio, Direction::Inactive, None, None, None);
            p.anchored = true;
        }
        for mid in p.to_stop.drain(..) {
            api.stop_media(mid);
        }
        let mut added = Vec::new();
        for endpoint in &p.wanted {
            if !p.sending.contains_key(endpoint) {
                let track = format!("{}-audio", endpoint.0);
                let mid = api.add_media(
                    MediaKind::Audio,
                    Direction::SendOnly,
                    Some(endpoint.0.to_string()),
                    Some(track),
                    None,
                );
                p.sending.insert(endpoint.clone(), SendSlot { mid, active: false });
                added.push((endpoint.clone(), mid));
            }
        }
        let mut publish = None;
        if let PublishState::Wanted(request_id) = p.publish {
            let mid = api.add_media(MediaKind::Audio, Direction::RecvOnly, None, None, None);
            publish = Some((mid, request_id));
            p.publish = PublishState::Offered;
        }
        if let Some((offer, pending)) = api.apply() {
            p.pending = Some(Pending { offer: pending, added, publish });
            p.offered_at.get_or_insert(now);
            let m = ServerMessage::Offer {
                sdp: offer.to_sdp_string(),
                publish_mid: publish.map(|(mid, _)| mid.to_string()),
            };
            self.events.push_back(SfuEvent::ToDevice(peer, m));
        }
        self.mark_dirty(peer);
    }

    pub(super) fn activate_publish(&mut self, now: Instant, peer: PeerId, mid: Mid, request_id: u32) {
        let Some(p) = self.peers.get_mut(&peer) else { return };
        if !matches!(p.publish, PublishState::Offered) {
            // Unpublished while the offer was out.
            p.to_stop.push(mid);
            return;
        }
        let participant = p.info.participant.clone();
        let session = p.info.session.clone();
        // The same participant publishing again within the grace continues its old stream.
        let adopted = self
            .owned(&participant, &session)
            .find(|(_, e)| matches!(e.source, Source::Orphaned(_)))
            .map(|(id, _)| id.clone());
        let endpoint = if let Some(id) = adopted
            && let Some(e) = self.endpoints.get_mut(&id)
        {
            e.source = Source::Peer(peer, mid);
            e.generation.0 += 1;
            id
        } else {
            self.insert_endpoint(Endpoint::new(participant.clone(), session.clone(), Source::Peer(peer, mid)))
        };
        if let Some(p) = self.peers.get_mut(&peer) {
            p.publish = PublishState::Active { mid, endpoint: endpoint.clone() };
        }
        let stream = stream_info(&endpoint, &participant, mid, false);
        self.events.push_back(SfuEvent::ToDevice(peer, ServerMessage::Published { request_id, stream }));
        self.events.push_back(SfuEvent::SubscriptionsStale { session, change: Change::Any });
        tracing::debug!(peer = peer.0, endpoint = %endpoint.0, ?now, "published");
    }

    pub(super) fn remove_endpoint(&mut self, now: Instant, endpoint: &EndpointId) {
        let Some(e) = self.endpoints.remove(endpoint) else { return };
        self.unindex(&e.session, |i| {
            i.endpoints.remove(endpoint);
            i.parked.remove(endpoint);
        });
        if let Some(owned) = self.by_owner.get_mut(&e.participant) {
            owned.retain(|id| id != endpoint);
            if owned.is_empty() {
                self.by_owner.remove(&e.participant);
            }
        }
        for t in e.targets {
            if let Target::Peer { peer, .. } = t
                && let Some(p) = self.peers.get_mut(&peer)
            {
                p.wanted.remove(endpoint);
                if let Some(slot) = p.sending.remove(endpoint) {
                    p.to_stop.push(slot.mid);
                }
                let m = ServerMessage::StreamUnavailable { endpoint_id: endpoint.0.to_string() };
                self.events.push_back(SfuEvent::ToDevice(peer, m));
                self.negotiate(now, peer);
            }
        }
        // Only the stream's own session subscribes to it (`refresh_subscriptions`): its peers
        // and external subscribers are the ones to update, not every one of the node.
        let (peers, externals) =
            self.by_session.get(&e.session).map(|i| (i.peers.clone(), i.externals.clone())).unwrap_or_default();
        // Subscribers whose m-line was still being negotiated.
        let waiting: Vec<PeerId> = peers
            .into_iter()
            .filter(|id| self.peers.get(id).is_some_and(|p| p.sending.contains_key(endpoint)))
            .collect();
        for peer in waiting {
            if let Some(p) = self.peers.get_mut(&peer) {
                p.wanted.remove(endpoint);
                if let Some(slot) = p.sending.remove(endpoint) {
                    p.to_stop.push(slot.mid);
                }
            }
            self.negotiate(now, peer);
        }
        for id in externals {
            if let Some(s) = self.externals.get_mut(&id) {
                s.wanted.remove(endpoint);
            }
        }
        // Every subscriber of the stream was updated above: nothing to recompute.
    }
}
