/*
 * interwork browser SDK. Plain JavaScript, no build step: load it with
 *   <script src="https://your-gateway/sdk/interwork.js"></script>
 * and use the global `InterworkRtc` (TypeScript declarations: /sdk/interwork.d.ts).
 *
 *   const rtc = new InterworkRtc();
 *   rtc.onStreamAvailable(stream => { audio.srcObject = stream.mediaStream; });
 *   rtc.onStreamUnavailable(endpointId => {});
 *   rtc.onDtmf(({participantId, tone}) => {});
 *   rtc.onDisconnected(err => {});                // the gateway ended the connection
 *   await rtc.connect({ deviceToken });          // url defaults to the page's origin
 *   await rtc.publish({ audio: true, video: false });
 *   rtc.sendDtmf("12#");
 *   await rtc.unpublish(); rtc.disconnect();
 *
 * Under it: one WebSocket at <url>/v1/device and one RTCPeerConnection. The gateway makes every
 * SDP offer and the SDK answers, so the two never offer at once. The wire protocol is
 * docs/device-protocol.md in the interwork repository.
 */
(function (global) {
  "use strict";

  var SDK_VERSION = "1.0.0";
  var DTMF = /^[0-9A-D*#]+$/;

  function wsUrl(base) {
    var u = new URL(base || global.location.origin);
    u.protocol = u.protocol === "https:" ? "wss:" : "ws:";
    u.pathname = u.pathname.replace(/\/+$/, "") + "/v1/device";
    u.search = "";
    u.hash = "";
    return u.toString();
  }

  function sdkError(code, message) {
    var e = new Error(code + ": " + message);
    e.code = code;
    return e;
  }

  function InterworkRtc() {
    this._ws = null;
    this._pc = null;
    this._welcome = null;
    this._onAvailable = null;
    this._onUnavailable = null;
    this._onDtmf = null;
    this._onMuted = null;
    this._onDisconnected = null;
    this._streams = new Map(); // endpointId -> RtcStream received
    this._requests = new Map(); // requestId -> {resolve, reject}
    this._nextRequest = 1;
    this._publishing = null; // {requestId, mediaStream, endpointId}
    this._chain = Promise.resolve(); // offers and stream events, in order
    this._ping = null;
    this._errors = []; // what went wrong inside, for debugging: last 20
  }

  /** Called with {endpointId, participantId, mediaTypes, mediaStream} for each stream heard. */
  InterworkRtc.prototype.onStreamAvailable = function (callback) {
    this._onAvailable = callback;
  };

  /** Called with the endpointId of a stream no longer heard. */
  InterworkRtc.prototype.onStreamUnavailable = function (callback) {
    this._onUnavailable = callback;
  };

  /**
   * Called with (endpointId, muted) when a stream heard is muted or unmuted: its SIP caller
   * holds or resumes the call, or a bridge participant is between calls. `stream.muted` keeps
   * the current state (Chromium does not mute a remote track whose packets stop).
   */
  InterworkRtc.prototype.onStreamMuted = function (callback) {
    this._onMuted = callback;
  };

  /**
   * Called with an Error when a connection the gateway admitted ends other than by
   * `disconnect()`: its `code` is the WebSocket close code (4010 the participant was removed or
   * its session ended, 4009 another tab took over, 1006 the network, ...). Every stream heard
   * has been reported unavailable by then.
   */
  InterworkRtc.prototype.onDisconnected = function (callback) {
    this._onDisconnected = callback;
  };

  /** Called with {participantId, tone} for each DTMF tone from a participant heard. */
  InterworkRtc.prototype.onDtmf = function (callback) {
    this._onDtmf = callback;
  };

  /**
   * Connects with a participant token. Resolves once the gateway admitted the token; rejects
   * with an Error whose `code` is the WebSocket close code (4001 bad or expired token, 4004
   * unknown participant, ...).
   */
  InterworkRtc.prototype.connect = function (options) {
    var self = this;
    options = options || {};
    if (!options.deviceToken) {
      return Promise.reject(sdkError("INVALID_ARGUMENT", "deviceToken is required"));
    }
    if (self._ws) {
      return Promise.reject(sdkError("OUT_OF_ORDER", "already connected"));
    }
    return new Promise(function (resolve, reject) {
      var ws = new WebSocket(wsUrl(options.url));
      self._ws = ws;
      // Not max-bundle: an offer whose m-lines are all stopped has no BUNDLE group, which
      // max-bundle refuses. The gateway bundles everything it offers anyway.
      var pc = new RTCPeerConnection({ rtcpMuxPolicy: "require" });
      self._pc = pc;
      pc.onicecandidate = function (ev) {
        if (ev.candidate && ev.candidate.candidate) {
          self._send({
            type: "candidate",
            candidate: ev.candidate.candidate,
            sdpMid: ev.candidate.sdpMid,
            sdpMLineIndex: ev.candidate.sdpMLineIndex,
          });
        }
      };
      ws.onopen = function () {
        self._send({ type: "hello", token: options.deviceToken, sdkVersion: SDK_VERSION });
      };
      ws.onmessage = function (ev) {
        var msg;
        try {
          msg = JSON.parse(ev.data);
        } catch (e) {
          return;
        }
        if (msg.type === "welcome") {
          self._welcome = msg;
          self._ping = setInterval(function () {
            self._send({ type: "ping" });
          }, msg.pingIntervalMs || 15000);
          resolve();
          return;
        }
        self._handle(msg);
      };
      ws.onclose = function (ev) {
        var e = sdkError(ev.code, ev.reason || "connection closed");
        self._note("closed " + ev.code + " " + ev.reason);
        if (self._ws !== ws) {
          // disconnect() tore this connection down already; another may be live since.
          reject(e);
          return;
        }
        var admitted = !!self._welcome;
        if (!admitted) {
          reject(e);
        }
        self._teardown(e);
        if (admitted && self._onDisconnected) {
          self._onDisconnected(e);
        }
      };
    });
  };

  /**
   * Publishes the microphone (or the audio of `mediaStream` when given). The gateway refuses
   * media not in the participant's publishPermissions (PERMISSION_DENIED) and video
   * (UNSUPPORTED: audio only). Resolves with {endpointId, mediaTypes, mediaStream}.
   */
  InterworkRtc.prototype.publish = function (constraints, mediaStream) {
    var self = this;
    constraints = constraints || { audio: true, video: false };
    var audio = constraints.audio !== undefined ? !!constraints.audio : true;
    var video = !!constraints.video;
    if (!self._welcome) {
      return Promise.reject(sdkError("OUT_OF_ORDER", "connect first"));
    }
    if (self._publishing && self._publishing.endpointId) {
      return Promise.resolve(self._publishing.stream);
    }
    var perms = self._welcome.publishPermissions || [];
    if ((audio && perms.indexOf("AUDIO") < 0) || (video && perms.indexOf("VIDEO") < 0)) {
      // The gateway refuses too; asking it gives the same answer without opening the mic.
      return self._request({ type: "publish", audio: audio, video: video });
    }
    var media = mediaStream
      ? Promise.resolve(mediaStream)
      : navigator.mediaDevices.getUserMedia({ audio: audio, video: false });
    return media.then(function (ms) {
      var pending = { mediaStream: ms, endpointId: null, stream: null };
      self._publishing = pending;
      return self._request({ type: "publish", audio: audio, video: video }).then(
        function (reply) {
          pending.endpointId = reply.stream.endpointId;
          pending.stream = {
            endpointId: reply.stream.endpointId,
            mediaTypes: reply.stream.mediaTypes,
            mediaStream: ms,
          };
          return pending.stream;
        },
        function (err) {
          if (self._publishing === pending) {
            self._publishing = null;
          }
          if (!mediaStream) {
            ms.getTracks().forEach(function (t) {
              t.stop();
            });
          }
          throw err;
        }
      );
    });
  };

  /** Stops publishing; the stream becomes unavailable to every subscriber. */
  InterworkRtc.prototype.unpublish = function () {
    var self = this;
    var p = self._publishing;
    if (!p) {
      return Promise.resolve();
    }
    self._publishing = null;
    p.mediaStream.getTracks().forEach(function (t) {
      t.stop();
    });
    return self._request({ type: "unpublish" }).then(function () {});
  };

  /** Sends DTMF tones (0-9 * # A-D) to whoever hears this participant. */
  InterworkRtc.prototype.sendDtmf = function (tones) {
    tones = String(tones || "");
    if (!DTMF.test(tones)) {
      throw sdkError("INVALID_ARGUMENT", "tones are 0-9 * # A-D");
    }
    this._send({ type: "dtmf", tones: tones });
  };

  /** Leaves: the gateway drops this device's streams at once. */
  InterworkRtc.prototype.disconnect = function () {
    if (this._ws && this._ws.readyState === WebSocket.OPEN) {
      this._send({ type: "bye" });
      this._ws.close(1000, "bye");
    }
    this._teardown(sdkError(1000, "disconnected"));
  };

  // ----- internals -----

  InterworkRtc.prototype._send = function (msg) {
    if (this._ws && this._ws.readyState === WebSocket.OPEN) {
      this._ws.send(JSON.stringify(msg));
    }
  };

  InterworkRtc.prototype._request = function (msg) {
    var self = this;
    var id = self._nextRequest++;
    msg.requestId = id;
    return new Promise(function (resolve, reject) {
      self._requests.set(id, { resolve: resolve, reject: reject });
      self._send(msg);
    });
  };

  InterworkRtc.prototype._enqueue = function (fn) {
    var self = this;
    this._chain = this._chain.then(fn).catch(function (e) {
      self._note(e);
    });
  };

  InterworkRtc.prototype._note = function (e) {
    console.warn("interwork:", e);
    this._errors.push(String((e && e.message) || e));
    if (this._errors.length > 20) {
      this._errors.shift();
    }
  };

  InterworkRtc.prototype._handle = function (msg) {
    var self = this;
    var r;
    switch (msg.type) {
      case "offer":
        self._enqueue(function () {
          return self._answer(msg);
        });
        break;
      case "published":
      case "unpublished":
        r = self._requests.get(msg.requestId);
        if (r) {
          self._requests.delete(msg.requestId);
          r.resolve(msg);
        }
        break;
      case "error":
        r = msg.requestId !== undefined ? self._requests.get(msg.requestId) : null;
        if (r) {
          self._requests.delete(msg.requestId);
          r.reject(sdkError(msg.code, msg.message));
        } else {
          self._note(msg.code + ": " + msg.message);
        }
        break;
      case "streamAvailable":
        self._enqueue(function () {
          self._available(msg);
        });
        break;
      case "streamUnavailable":
        self._enqueue(function () {
          if (self._streams.delete(msg.endpointId) && self._onUnavailable) {
            self._onUnavailable(msg.endpointId);
          }
        });
        break;
      case "streamMuted":
        self._enqueue(function () {
          var s = self._streams.get(msg.endpointId);
          if (s && s.muted !== msg.muted) {
            s.muted = msg.muted;
            if (self._onMuted) {
              self._onMuted(msg.endpointId, msg.muted);
            }
          }
        });
        break;
      case "dtmf":
        if (self._onDtmf) {
          self._onDtmf({ participantId: msg.participantId, tone: msg.tone });
        }
        break;
      default:
        break;
    }
  };

  InterworkRtc.prototype._answer = function (msg) {
    var self = this;
    var pc = self._pc;
    return pc
      .setRemoteDescription({ type: "offer", sdp: msg.sdp })
      .then(function () {
        if (!msg.publishMid) {
          return;
        }
        var t = pc.getTransceivers().find(function (t) {
          return t.mid === msg.publishMid;
        });
        var track = self._publishing && self._publishing.mediaStream.getAudioTracks()[0];
        if (t && track) {
          t.direction = "sendonly";
          return t.sender.replaceTrack(track);
        }
      })
      .then(function () {
        return pc.createAnswer();
      })
      .then(function (answer) {
        return pc.setLocalDescription(answer);
      })
      .then(function () {
        self._send({ type: "answer", sdp: pc.localDescription.sdp });
      });
  };

  InterworkRtc.prototype._available = function (msg) {
    var t = this._pc.getTransceivers().find(function (t) {
      return t.mid === msg.mid;
    });
    if (!t) {
      this._note("no transceiver for mid " + msg.mid);
      return;
    }
    var stream = {
      endpointId: msg.endpointId,
      participantId: msg.participantId,
      mediaTypes: msg.mediaTypes,
      mediaStream: new MediaStream([t.receiver.track]),
      muted: !!msg.muted,
    };
    this._streams.set(msg.endpointId, stream);
    if (this._onAvailable) {
      this._onAvailable(stream);
    }
  };

  InterworkRtc.prototype._teardown = function (err) {
    var self = this;
    if (self._ping) {
      clearInterval(self._ping);
      self._ping = null;
    }
    self._requests.forEach(function (r) {
      r.reject(err);
    });
    self._requests.clear();
    if (self._pc) {
      self._pc.close();
      self._pc = null;
    }
    var gone = Array.from(self._streams.keys());
    self._streams.clear();
    if (self._welcome && self._onUnavailable) {
      gone.forEach(function (e) {
        self._onUnavailable(e);
      });
    }
    if (self._publishing) {
      self._publishing.mediaStream.getTracks().forEach(function (t) {
        t.stop();
      });
      self._publishing = null;
    }
    self._ws = null;
    self._welcome = null;
  };

  global.InterworkRtc = InterworkRtc;
})(typeof window !== "undefined" ? window : this);
