import ArgumentParser
import Glibc
import HypernetDaemon
import HypernetModel

struct Retention: HypernetCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show or set how long the history of PATH and what it holds is kept.",
        discussion: """
            POLICY is `all`, or rules of which a revision needs one to be kept: `last N`, `within DURATION` (30d, \
            12h, 1y6w; units y w d h m s, m = minutes), `hourly N`, `daily N`, `weekly N`, `monthly N`, `yearly N` \
            (the newest revision of each of the N latest periods that have one). Without POLICY, prints the policy \
            in force: set on PATH, else on the nearest directory above it, else the default `within 30d daily 180`. \
            The same as `getfattr`/`setfattr -n user.hypernet.retention` (docs/xattrs.md).
            """)

    @OptionGroup var global: GlobalOptions
    @Argument(help: "A file or directory in the mounted folder.") var path: String
    @Argument(help: "The policy, e.g. `last 10 daily 30`.") var policy: [String] = []

    func execute() throws(Failure) {
        let name = "user.hypernet.retention"
        if policy.isEmpty {
            print(try RightsChange.get(name, path: path))
            return
        }
        let parsed: RetentionPolicy
        do { parsed = try RetentionPolicy(parsing: policy.joined(separator: " ")) } catch {
            throw Failure(.usage, "bad retention policy: \(error)")
        }
        try RightsChange.set(name, parsed.description, path: path) { code, path in
            code == EACCES
                ? Failure(.failure, "\(path): not allowed: needs write") : RightsChange.failure(code, path: path)
        }
    }
}
