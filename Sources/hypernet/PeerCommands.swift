import ArgumentParser
import FoundationEssentials
import HypernetDaemon
import HypernetModel
import HypernetStore
import HypernetSync
import Logging

struct Peer: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Nodes to connect to (also learned from peers).",
        subcommands: [PeerAdd.self, PeerRemove.self, PeerList.self])
}

struct PeerAdd: HypernetCommand {
    static let configuration = CommandConfiguration(
        commandName: "add", abstract: "Remember HOST:PORT and connect to it.")
    @OptionGroup var global: GlobalOptions
    @Argument(help: ArgumentHelp("The node's address.", valueName: "HOST:PORT")) var address: String

    func execute() throws(Failure) {
        let address = try PeerCommands.validAddress(address)
        try withNode(global.home, ControlRequest(command: .peerAdd, argument: address), as: Acknowledgement.self) {
            (store) throws(StoreError) in try store.addPeer(address, configured: true)
        }
    }
}

struct PeerRemove: HypernetCommand {
    static let configuration = CommandConfiguration(
        commandName: "remove",
        abstract: "Forget HOST:PORT: disconnect, stop dialing it, refuse the node last seen there.",
        discussion: "Learning the address from peers does not bring it back; `peer add` does.")
    @OptionGroup var global: GlobalOptions
    @Argument(help: ArgumentHelp("The node's address, as `peer list` shows it.", valueName: "HOST:PORT"))
    var address: String

    func execute() throws(Failure) {
        let address = try PeerCommands.validAddress(address)
        // A daemon answers an unknown address with the same failure.
        var known = true
        try withNode(global.home, ControlRequest(command: .peerRemove, argument: address), as: Acknowledgement.self) {
            (store) throws(StoreError) in known = try store.removePeer(address) != nil
        }
        if !known { throw PeerCommands.unknownPeer(address) }
    }
}

struct PeerList: HypernetCommand {
    static let configuration = CommandConfiguration(
        commandName: "list", abstract: "Known peers: address, node, connected or not, since when, last error.")
    @OptionGroup var global: GlobalOptions

    func execute() throws(Failure) {
        let peers = try withNode(global.home, ControlRequest(command: .peers), as: [PeerStatus].self) {
            (store) throws(StoreError) in
            try store.peers().map {
                PeerStatus(
                    address: $0.address, node: $0.node, connected: false, since: $0.lastSeen, lastError: $0.lastError)
            }
        }
        for line in peerLines(peers) { print(line) }
    }
}

struct Pin: HypernetCommand {
    static let configuration = CommandConfiguration(
        abstract: "Store and serve WHO's tree on this node ('*': every tree offered).",
        discussion: """
            A node pinning a tree its identity has no rights on holds ciphertext only. With --content on-demand it \
            holds the tree's metadata and fetches file content from its peers when read.
            """)
    @OptionGroup var global: GlobalOptions
    @Argument(help: "An identity token, a contact name, or '*'.") var who: String
    @Option(help: ArgumentHelp("all: keep a full copy; on-demand: fetch file content when read.", valueName: "MODE"))
    var content = "all"

    func execute() throws(Failure) { try setPin(global.home, who, true, content: content) }
}

struct Unpin: HypernetCommand {
    static let configuration = CommandConfiguration(abstract: "Stop fetching WHO's tree (what is stored stays).")
    @OptionGroup var global: GlobalOptions
    @Argument(help: "An identity token, a contact name, or '*'.") var who: String

    func execute() throws(Failure) { try setPin(global.home, who, false) }
}

struct Pins: HypernetCommand {
    static let configuration = CommandConfiguration(abstract: "List the trees this node pins.")
    @OptionGroup var global: GlobalOptions

    func execute() throws(Failure) {
        let pins = try withNode(global.home, ControlRequest(command: .pins), as: [String].self) {
            (store) throws(StoreError) in
            try store.pins()
        }
        for p in pins { print(p) }
    }
}

private func setPin(_ home: Home, _ who: String, _ pinned: Bool, content: String? = nil) throws(Failure) {
    // A contact's name stands for its identity; the pin records the token.
    let who = try PeerCommands.validPin((try? Contacts.load(home))?.identity(named: who)?.description ?? who)
    let mode = try PeerCommands.validContent(content)
    let request = ControlRequest(command: pinned ? .pin : .unpin, argument: who, content: content)
    try withNode(home, request, as: Acknowledgement.self) { (store) throws(StoreError) in
        try store.setPinned(who, pinned, content: mode)
    }
}

/// Asks the running daemon, or, when none runs, opens the store under the home lock and does it there.
@discardableResult
private func withNode<T: Decodable>(
    _ home: Home, _ request: ControlRequest, as type: T.Type, offline: (Store) throws(StoreError) -> T
) throws(Failure) -> T {
    do {
        return try ControlClient(home: home).send(request, expecting: type)
    } catch {
        guard error.status == .noDaemon else { throw error }
    }
    let lock = try HomeLock.acquire(home: home)
    defer { lock.release() }
    do {
        let keyring = try Keyring.load(directory: home.keysDirectory)
        let store = try Store(home: home, keyring: keyring, logger: Logger(label: "hypernet"))
        return try offline(store)
    } catch {
        throw Failure(.store, "\(home.path): \(error)")
    }
}

@discardableResult
private func withNode(
    _ home: Home, _ request: ControlRequest, as type: Acknowledgement.Type, offline: (Store) throws(StoreError) -> Void
) throws(Failure) -> Acknowledgement {
    try withNode(home, request, as: type) { (store) throws(StoreError) in
        try offline(store)
        return Acknowledgement()
    }
}

/// One line per peer, as `peer list` and `status` print them.
func peerLines(_ peers: [PeerStatus]) -> [String] {
    peers.map { p in
        var line =
            "\(p.address)  \(p.node.map { String($0.prefix(16)) } ?? "-")  \(p.connected ? "connected" : "not connected")"
        if let since = p.since {
            line +=
                (p.connected ? "  since " : "  last seen ") + ISO8601.format(milliseconds: UInt64(max(0, since)) * 1000)
        }
        if let e = p.lastError { line += "  last error: \(e)" }
        return line
    }
}
