import ArgumentParser
import HypernetDaemon
import HypernetModel
import HypernetStore

struct Contact: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Petnames for identities: contact add NAME IDENTITY, contact list.",
        subcommands: [ContactAdd.self, ContactList.self])
}

struct ContactAdd: HypernetCommand {
    static let configuration = CommandConfiguration(
        commandName: "add", abstract: "Name an identity (one name per identity); no daemon needed.")

    @OptionGroup var global: GlobalOptions
    @Argument(help: "The petname: one path component, not starting with hn1.") var name: String
    @Argument(help: "The identity token (hn1…) that `hypernet id` prints on its node.") var identity: String

    func execute() throws(Failure) {
        guard let token = IdentityToken(identity) else { throw Failure(.usage, "not an identity token: \(identity)") }
        let home = global.home
        try Home.makeDirectoryOrFail(home.path)
        do {
            var contacts = try Contacts.load(home)
            try contacts.add(name, token, in: home)
        } catch {
            if case .invalid(let why) = error { throw Failure(.usage, why) }
            throw Failure(.store, "contacts in \(home.path): \(error)")
        }
    }
}

struct ContactList: HypernetCommand {
    static let configuration = CommandConfiguration(
        commandName: "list", abstract: "Print NAME IDENTITY per contact, by name.")

    @OptionGroup var global: GlobalOptions

    func execute() throws(Failure) {
        let contacts: Contacts
        do { contacts = try Contacts.load(global.home) } catch {
            throw Failure(.store, "contacts in \(global.home.path): \(error)")
        }
        for c in contacts.list { print("\(c.name) \(c.identity)") }
    }
}
