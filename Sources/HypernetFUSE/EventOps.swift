import CFuse3
import Glibc
import HypernetVFS
import Synchronization

// Reads of `/.hypernet/events` block until the next event without holding a FUSE worker thread: the
// request is answered later from the thread that publishes the event, or with EINTR when the reader is
// interrupted (Ctrl-C on `cat`), which libfuse reports through `fuse_req_interrupt_func`.

/// One read waiting for events. Replying frees the request, so the reply and the check for an interrupt
/// that came before the read was queued are serialized by `replied`.
private final class PendingEventRead: @unchecked Sendable {
    let raw: fuse_req_t
    let reader: EventReader
    let replied = Mutex(false)

    init(raw: fuse_req_t, reader: EventReader) {
        self.raw = raw
        self.reader = reader
    }

    var token: UInt { UInt(bitPattern: Int(bitPattern: UnsafeRawPointer(raw))) }

    func deliver(_ bytes: [UInt8]?) {
        replied.withLock { done in
            guard !done else { return }
            done = true
            guard let bytes else {
                fuse_reply_err(raw, EINTR)
                return
            }
            bytes.withUnsafeBufferPointer { buffer in
                buffer.withMemoryRebound(to: CChar.self) { _ = fuse_reply_buf(raw, $0.baseAddress, $0.count) }
            }
        }
    }

    /// An interrupt that arrived before the read was queued found nothing to cancel: cancel now.
    func cancelIfInterrupted() {
        let interrupted = replied.withLock { done in !done && fuse_req_interrupted(raw) != 0 }
        if interrupted { reader.cancelRead(token: token) }
    }
}

func readEvents(_ reader: EventReader, request: Request, size: Int) {
    let pending = PendingEventRead(raw: request.raw, reader: reader)
    // The reader outlives the request: its handle is released only after every read on it is answered.
    // The request's address names the read; libfuse calls this only while the request is unanswered.
    fuse_req_interrupt_func(
        request.raw,
        { req, data in
            let token = UInt(bitPattern: Int(bitPattern: UnsafeRawPointer(req!)))
            Unmanaged<EventReader>.fromOpaque(data!).takeUnretainedValue().cancelRead(token: token)
        },
        Unmanaged.passUnretained(reader).toOpaque())
    reader.read(maximum: size, token: pending.token) { bytes in pending.deliver(bytes) }
    pending.cancelIfInterrupted()
}
