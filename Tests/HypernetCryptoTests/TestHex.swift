import HypernetCrypto

/// Hex literal for test vectors; traps on a typo in the vector itself.
func hex(_ text: String) -> [UInt8] {
    guard let bytes = Hex.decode(text.filter { !$0.isWhitespace }) else { fatalError("bad hex in test vector") }
    return bytes
}
