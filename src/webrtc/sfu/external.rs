//! Non-browser publishers and subscribers: the SIP legs' streams (published, parked,
//! continued, muted) and their mixers' subscriptions.

use super::*;

impl Sfu {
    /// A non-browser publisher of Opus frames (a SIP leg's transcoded audio) in `session`.
    /// Its frames go to every subscriber that hears `participant` once subscriptions are
    /// refreshed. The participant's parked stream, when it has one in this session, is
    /// continued instead (bridge re-attach): browsers keep their track, and its RTP time may
    /// start anywhere while subscribers' timelines go on.
    pub fn add_external_publisher(&mut self, participant: ParticipantId, session: SessionId) -> EndpointId {
        let parked =
            self.owned(&participant, &session).find(|(_, e)| e.source == Source::Parked).map(|(id, _)| id.clone());
        if let Some(id) = parked
            && let Some(e) = self.endpoints.get_mut(&id)
        {
            e.source = Source::External;
            e.generation.0 += 1;
            if let Some(i) = self.by_session.get_mut(&session) {
                i.parked.remove(&id);
                i.endpoints.insert(id.clone());
            }
            let _ = self.set_external_muted(&id, false);
            // Browsers kept it; the SIP mixers that hear it take it again.
            self.events.push_back(SfuEvent::SubscriptionsStale { session, change: Change::Stream(id.clone()) });
            return id;
        }
        let id = self.insert_endpoint(Endpoint::new(participant, session.clone(), Source::External));
        self.events.push_back(SfuEvent::SubscriptionsStale { session, change: Change::Stream(id.clone()) });
        id
    }

    /// A bridge-mode leg ended: its stream stays, muted, for the participant's next leg
    /// ([`Sfu::add_external_publisher`]), unless another leg already publishes for the
    /// participant (a new INVITE before the old leg's BYE): one stream per participant.
    pub fn park_external_publisher(&mut self, now: Instant, endpoint: &EndpointId) {
        let Some(e) = self.endpoints.get(endpoint) else { return };
        let (participant, session) = (e.participant.clone(), e.session.clone());
        let other_live =
            self.owned(&participant, &session).any(|(id, o)| id != endpoint && o.source == Source::External);
        if other_live {
            self.remove_endpoint(now, endpoint);
            return;
        }
        let Some(e) = self.endpoints.get_mut(endpoint) else { return };
        e.source = Source::Parked;
        // Out of every SIP mixer: it sends nothing until adopted ([`SessionIndex::parked`]).
        let mut mixers = Vec::new();
        e.targets.retain(|t| match t {
            Target::External(id) => {
                mixers.push(*id);
                false
            }
            Target::Peer { .. } => true,
        });
        for id in mixers {
            if let Some(s) = self.externals.get_mut(&id) {
                s.wanted.remove(endpoint);
            }
        }
        if let Some(i) = self.by_session.get_mut(&session) {
            i.endpoints.remove(endpoint);
            i.parked.insert(endpoint.clone());
        }
        let _ = self.set_external_muted(endpoint, true);
    }

    /// Removes the parked streams `which` names (found through the indexes: a leave costs the
    /// same however many streams the node holds).
    pub fn remove_parked(&mut self, now: Instant, which: Parked<'_>) {
        let of_owner = |participant: &ParticipantId, session: Option<&SessionId>| -> Vec<EndpointId> {
            self.by_owner
                .get(participant)
                .into_iter()
                .flatten()
                .filter(|id| {
                    self.endpoints
                        .get(*id)
                        .is_some_and(|e| e.source == Source::Parked && session.is_none_or(|s| e.session == *s))
                })
                .cloned()
                .collect()
        };
        let doomed = match which {
            Parked::Of(participant, session) => of_owner(participant, Some(session)),
            Parked::OfParticipant(participant) => of_owner(participant, None),
            Parked::InSession(session) => {
                self.by_session.get(session).map(|i| i.parked.iter().cloned().collect()).unwrap_or_default()
            }
        };
        for endpoint in doomed {
            self.remove_endpoint(now, &endpoint);
        }
    }

    /// An external publisher stops or starts sending (its SIP leg holds or resumes the call,
    /// a bridge stream is parked or continued): the devices that receive it are told, so
    /// that the SDK can show it muted. Nothing happens when nothing changed.
    pub fn set_external_muted(&mut self, endpoint: &EndpointId, muted: bool) -> Result<(), SfuError> {
        let e = self.endpoints.get_mut(endpoint).ok_or(SfuError::UnknownEndpoint)?;
        if e.muted == muted {
            return Ok(());
        }
        e.muted = muted;
        for t in &e.targets {
            if let Target::Peer { peer, .. } = t {
                let m = ServerMessage::StreamMuted { endpoint_id: endpoint.0.to_string(), muted };
                self.events.push_back(SfuEvent::ToDevice(*peer, m));
            }
        }
        Ok(())
    }

    /// One Opus frame (20 ms, 48 kHz RTP time) from an external publisher.
    pub fn handle_external_frame(
        &mut self,
        now: Instant,
        endpoint: &EndpointId,
        rtp_time: MediaTime,
        data: Arc<[u8]>,
    ) -> Result<(), SfuError> {
        if !self.endpoints.contains_key(endpoint) {
            return Err(SfuError::UnknownEndpoint);
        }
        self.forward(now, endpoint, now, rtp_time, data);
        self.drive(now);
        Ok(())
    }

    /// Removes an external publisher; its stream becomes unavailable.
    pub fn remove_external_publisher(&mut self, now: Instant, endpoint: &EndpointId) {
        self.remove_endpoint(now, endpoint);
    }

    /// A non-browser subscriber (a SIP leg's mixer) for `participant` in `session`: it gets
    /// [`SfuEvent::ExternalFrame`] for every stream the participant hears.
    pub fn add_external_subscriber(&mut self, participant: ParticipantId, session: SessionId) -> ExternalSubscriberId {
        let id = ExternalSubscriberId(self.next_id);
        self.next_id += 1;
        self.by_session.entry(session.clone()).or_default().externals.push(id);
        self.externals
            .insert(id, ExternalSubscriber { participant, session: session.clone(), wanted: BTreeSet::new() });
        self.events.push_back(SfuEvent::SubscriptionsStale { session, change: Change::Subscriber(id) });
        id
    }

    /// Removes an external subscriber.
    pub fn remove_external_subscriber(&mut self, id: ExternalSubscriberId) {
        // The streams that name it as a target are exactly those it wants (see
        // `refresh_subscriptions`).
        let Some(s) = self.externals.remove(&id) else { return };
        self.unindex(&s.session, |i| i.externals.retain(|x| *x != id));
        for eid in &s.wanted {
            if let Some(e) = self.endpoints.get_mut(eid) {
                e.targets.retain(|t| *t != Target::External(id));
            }
        }
    }

    /// `participant`'s endpoints in `session`.
    pub(super) fn owned<'a>(
        &'a self,
        participant: &ParticipantId,
        session: &'a SessionId,
    ) -> impl Iterator<Item = (&'a EndpointId, &'a Endpoint)> + 'a {
        self.by_owner
            .get(participant)
            .into_iter()
            .flatten()
            .filter_map(|id| self.endpoints.get_key_value(id))
            .filter(move |(_, e)| e.session == *session)
    }

    /// Changes `session`'s index, dropping it once empty.
    pub(super) fn unindex(&mut self, session: &SessionId, change: impl FnOnce(&mut SessionIndex)) {
        if let Some(index) = self.by_session.get_mut(session) {
            change(index);
            if index.is_empty() {
                self.by_session.remove(session);
            }
        }
    }

    /// Adds a new endpoint under a fresh id, indexed by its owner and session.
    pub(super) fn insert_endpoint(&mut self, endpoint: Endpoint) -> EndpointId {
        let id = EndpointId::generate();
        self.by_owner.entry(endpoint.participant.clone()).or_default().push(id.clone());
        self.by_session.entry(endpoint.session.clone()).or_default().endpoints.insert(id.clone());
        self.endpoints.insert(id.clone(), endpoint);
        id
    }
}
