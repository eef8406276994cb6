import Glibc

/// What `/proc/self/mountinfo` says about a path.
public enum MountTable {
    /// The file system type of the topmost mount at `canonicalPath` ("fuse.hypernet"), or nil when
    /// nothing is mounted there.
    public static func fileSystemType(at canonicalPath: String) -> String? {
        guard let file = fopen("/proc/self/mountinfo", "re") else { return nil }
        defer { fclose(file) }
        var line: UnsafeMutablePointer<CChar>? = nil
        var capacity = 0
        defer { free(line) }
        var found: String? = nil
        // "36 35 98:0 /root /mnt rw,noatime master:1 - ext3 /dev/root rw"; later lines are mounted on top.
        while getline(&line, &capacity, file) > 0 {
            let fields = String(cString: line!).split(separator: " ")
            guard fields.count > 4, unescape(fields[4]) == canonicalPath,
                let separator = fields.firstIndex(of: "-"), separator + 1 < fields.count
            else { continue }
            found = String(fields[separator + 1])
        }
        return found
    }

    /// mountinfo escapes space, tab, newline and backslash as `\ooo`.
    private static func unescape(_ field: Substring) -> String {
        let utf8 = Array(field.utf8)
        var bytes: [UInt8] = []
        var i = 0
        while i < utf8.count {
            if utf8[i] == UInt8(ascii: "\\"), i + 3 < utf8.count,
                let value = UInt8(String(decoding: utf8[(i + 1)...(i + 3)], as: UTF8.self), radix: 8)
            {
                bytes.append(value)
                i += 4
            } else {
                bytes.append(utf8[i])
                i += 1
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}
