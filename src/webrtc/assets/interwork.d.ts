// TypeScript declarations for the interwork browser SDK (/sdk/interwork.js).
// The script defines a global `InterworkRtc`; declare it in your code with
//   /// <reference path="interwork.d.ts" />

/** A kind of media a participant may publish. */
type MediaType = "AUDIO" | "VIDEO";

/** A stream this participant receives. */
interface RtcStream {
  /** The stream's id; `onStreamUnavailable` names it. */
  endpointId: string;
  /** The participant publishing it. */
  participantId: string;
  /** What it carries. */
  mediaTypes: MediaType[];
  /** Attach to an <audio> element's `srcObject`. */
  mediaStream: MediaStream;
  /** Its publisher sends nothing for now (a SIP caller on hold, a bridge participant between
   * calls); `onStreamMuted` tells of changes. */
  muted: boolean;
}

/** A stream this participant publishes. */
interface PublishedStream {
  endpointId: string;
  mediaTypes: MediaType[];
  mediaStream: MediaStream;
}

interface ConnectOptions {
  /** The participant token from the control API (`POST /participants`). */
  deviceToken: string;
  /** The gateway's base HTTP(S) URL; defaults to the page's origin. */
  url?: string;
}

interface PublishOptions {
  audio?: boolean;
  /** Refused: the gateway forwards audio only. */
  video?: boolean;
}

interface DtmfEvent {
  participantId: string;
  tone: string;
}

/** Errors reject with an Error carrying `code`: a close code (number) or an error code. */
interface InterworkError extends Error {
  code: number | "PROTOCOL_ERROR" | "OUT_OF_ORDER" | "PERMISSION_DENIED" | "UNSUPPORTED" | "INVALID_ARGUMENT" | "INTERNAL";
}

declare class InterworkRtc {
  constructor();
  onStreamAvailable(callback: (stream: RtcStream) => void): void;
  onStreamUnavailable(callback: (endpointId: string) => void): void;
  onStreamMuted(callback: (endpointId: string, muted: boolean) => void): void;
  onDtmf(callback: (event: DtmfEvent) => void): void;
  /** The gateway ended an admitted connection (not `disconnect()`); `code` is the close code. */
  onDisconnected(callback: (error: InterworkError) => void): void;
  connect(options: ConnectOptions): Promise<void>;
  publish(options?: PublishOptions, mediaStream?: MediaStream): Promise<PublishedStream>;
  unpublish(): Promise<void>;
  sendDtmf(tones: string): void;
  disconnect(): void;
}
