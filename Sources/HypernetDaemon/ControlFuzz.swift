/// Entry point for the `FuzzControl` libFuzzer target (`Fuzz/`) and its corpus replay
/// (`Tests/HypernetSyncTests/FuzzCorpusTests.swift`): a control socket request line as the server hands it to
/// `ControlCodec.decodeRequest` (any local process that may connect to the socket writes it). As `WireFuzz`:
/// errors are expected and swallowed, broken invariants are returned.
///
/// The input is one line without its newline. A line that does not decode must fail as a usage error (exit 2,
/// one line); one that decodes must re-encode to exactly one line that decodes to the same request (what the CLI
/// sends is what the daemon reads).
public enum ControlFuzz {
    public static func requests(_ line: [UInt8]) -> [String] {
        let request: ControlRequest
        do { request = try ControlCodec.decodeRequest(line) } catch {
            if error.status != .usage || error.message.contains("\n") {
                return ["control: a malformed request failed with status \(error.status): \(error.message)"]
            }
            return []
        }
        let encoded = ControlCodec.encodeRequest(request)
        guard encoded.last == UInt8(ascii: "\n"), !encoded.dropLast().contains(UInt8(ascii: "\n")) else {
            return ["control: a request re-encodes to other than one line"]
        }
        guard let again = try? ControlCodec.decodeRequest(Array(encoded.dropLast())), again == request else {
            return ["control: a request does not decode back from its own encoding"]
        }
        return []
    }

    /// Small inputs (name, bytes), deterministic: `Fuzz/corpus/FuzzControl/seed-<name>` is exactly this
    /// (FuzzCorpusTests checks it, and rewrites it with `HYPERNET_FUZZ_WRITE_SEEDS=1`).
    public static func seeds() -> [(name: String, bytes: [UInt8])] {
        let requests: [(String, ControlRequest)] = [
            ("status", ControlRequest(command: .status)),
            ("log", ControlRequest(command: .log, path: "/root/Hypernet/a.txt")),
            ("cat", ControlRequest(command: .cat, path: "/root/Hypernet/a b\n.txt", revision: "0a1b")),
            ("peer-add", ControlRequest(command: .peerAdd, argument: "10.0.0.1:7400")),
            ("watch", ControlRequest(command: .watch, paths: ["/root/Hypernet", "/root/Hypernet/é"], since: 42)),
        ]
        return requests.map { ($0.0, Array(ControlCodec.encodeRequest($0.1).dropLast())) } + [
            ("unknown-command", Array(#"{"command":"format","path":"/"}"#.utf8)),
            ("wrong-type", Array(#"{"command":"log","since":"yesterday"}"#.utf8)),
        ]
    }
}
