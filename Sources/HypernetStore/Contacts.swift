import Glibc
import HypernetModel

/// Petnames for identities (`hypernet contact add NAME IDENTITY`), in `HOME/contacts`: one line per contact,
/// `NAME<TAB>TOKEN`, sorted by name, mode 0600, replaced atomically. One name per identity and one identity
/// per name: a petname that could mean two people, or a person with two names, would make `grant` ambiguous.
public struct Contacts: Sendable, Equatable {
    public struct Contact: Sendable, Equatable {
        public var name: String
        public var identity: IdentityToken
    }

    static let file = "contacts"
    static let maximumByteCount = 1 << 20
    static let maximumNameLength = 64

    public private(set) var list: [Contact] = []

    /// The contacts in `home`; none when the file does not exist yet.
    public static func load(_ home: Home) throws(StoreError) -> Contacts {
        let path = home.path + "/" + file
        let fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW)
        if fd < 0 {
            if errno == ENOENT { return Contacts() }
            throw .io(path: path, errno: errno)
        }
        defer { close(fd) }
        var bytes = [UInt8](repeating: 0, count: maximumByteCount + 1)
        let count = try readFully(fd, into: &bytes).mapError { StoreError.io(path: path, errno: $0.errno) }.get()
        guard count <= maximumByteCount else {
            throw .corrupt(object: path, reason: "larger than \(maximumByteCount) bytes")
        }
        var contacts = Contacts()
        for (number, line) in bytes[..<count].split(separator: UInt8(ascii: "\n")).enumerated() {
            let fields = line.split(separator: UInt8(ascii: "\t"), omittingEmptySubsequences: false)
            guard fields.count == 2, let name = String(validating: fields[0], as: UTF8.self), validName(name) == nil,
                let token = IdentityToken(String(decoding: fields[1], as: UTF8.self))
            else { throw .corrupt(object: path, reason: "line \(number + 1) is not NAME<TAB>IDENTITY") }
            contacts.list.append(Contact(name: name, identity: token))
        }
        return contacts
    }

    public func identity(named name: String) -> IdentityToken? { list.first { $0.name == name }?.identity }

    /// Adds `name` for `identity` and writes the file; adding an existing pair again changes nothing.
    public mutating func add(_ name: String, _ identity: IdentityToken, in home: Home) throws(StoreError) {
        if let why = Self.validName(name) { throw .invalid("contact name \(name.debugDescription): \(why)") }
        if let existing = list.first(where: { $0.name == name }) {
            guard existing.identity == identity else {
                throw .invalid("\(name) is already the contact \(existing.identity)")
            }
            return
        }
        if let other = list.first(where: { $0.identity == identity }) {
            throw .invalid("\(identity) is already the contact \(other.name)")
        }
        list.append(Contact(name: name, identity: identity))
        list.sort { $0.name.utf8.lexicographicallyPrecedes($1.name.utf8) }
        let text = list.map { "\($0.name)\t\($0.identity)\n" }.joined()
        _ = try PrivateFile.write(home.path, Self.file, contents: Array(text.utf8), replacing: true)
    }

    /// Why `name` cannot be a petname (nil: it can). It appears as `/@NAME/` in the mount and as WHO in
    /// `grant`, so it must be one path component that cannot be taken for an identity token or for `*`.
    static func validName(_ name: String) -> String? {
        if name.isEmpty || name.utf8.count > maximumNameLength { return "1 to \(maximumNameLength) bytes" }
        if name == "*" || name == "." || name == ".." { return "reserved" }
        if name.hasPrefix(IdentityToken.prefix) {
            return "may not start with \(IdentityToken.prefix) (identity tokens do)"
        }
        if name.unicodeScalars.contains(where: {
            $0 == "/" || $0.properties.isWhitespace || $0.properties.generalCategory == .control
        }) {
            return "no slash, space or control character"
        }
        return nil
    }
}
