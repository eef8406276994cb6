// libFuzzer target: WireFuzz.haveSets(_:) in Sources/HypernetSync/Wire/FuzzEntryPoints.swift says what the
// input means. Build and run with Fuzz/run.sh.
import CFuzzDriver
import Glibc
import HypernetSync

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOne(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let bytes = data.map { Array(UnsafeBufferPointer(start: $0, count: size)) } ?? []
    let violations = WireFuzz.haveSets(bytes)
    // Decoding errors are fine; a broken invariant is a finding: trap so that libFuzzer keeps the input.
    if !violations.isEmpty { fatalError(violations.joined(separator: "; ")) }
    return 0
}

var argc = CommandLine.argc
var argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>? = CommandLine.unsafeArgv
exit(LLVMFuzzerRunDriver(&argc, &argv, fuzzOne))
