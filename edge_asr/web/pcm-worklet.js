// The microphone for live captions: its samples (at the AudioContext's rate, 24 kHz) as 16-bit
// PCM, posted to the page 100 ms at a time, which sends them over the Realtime API.
"use strict";

class Pcm16 extends AudioWorkletProcessor {
  constructor() {
    super();
    this.piece = new Int16Array(sampleRate / 10);
    this.filled = 0;
  }

  process(inputs) {
    const channel = inputs[0][0];
    if (channel) {
      for (const sample of channel) {
        this.piece[this.filled++] = Math.max(-1, Math.min(1, sample)) * 0x7fff;
        if (this.filled === this.piece.length) {
          this.port.postMessage(this.piece.buffer, [this.piece.buffer]);
          this.piece = new Int16Array(sampleRate / 10);
          this.filled = 0;
        }
      }
    }
    return true;
  }
}

registerProcessor("pcm16", Pcm16);
