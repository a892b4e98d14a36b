import CZlib

/// Inflates gzip (and zlib) request bodies, refusing output beyond a limit so a small compressed body cannot
/// expand without bound.
enum Gzip {
    enum Failure: Error {
        /// The data is not valid gzip.
        case invalid(String)
        /// The inflated body is larger than the limit.
        case tooLarge
    }

    static func inflate(_ input: [UInt8], limit: Int) throws -> [UInt8] {
        var stream = z_stream()
        // 15 window bits + 32: detect gzip or zlib headers automatically.
        guard inflateInit2_(&stream, 15 + 32, ZLIB_VERSION, Int32(MemoryLayout<z_stream>.size)) == Z_OK else {
            throw Failure.invalid("zlib could not start")
        }
        defer { inflateEnd(&stream) }
        var output = [UInt8]()
        var chunk = [UInt8](repeating: 0, count: 64 * 1024)
        var input = input
        return try input.withUnsafeMutableBufferPointer { source in
            stream.next_in = source.baseAddress
            stream.avail_in = UInt32(source.count)
            while true {
                let status = chunk.withUnsafeMutableBufferPointer { buffer -> Int32 in
                    stream.next_out = buffer.baseAddress
                    stream.avail_out = UInt32(buffer.count)
                    return CZlib.inflate(&stream, Z_NO_FLUSH)
                }
                let produced = chunk.count - Int(stream.avail_out)
                output.append(contentsOf: chunk[0..<produced])
                if output.count > limit { throw Failure.tooLarge }
                switch status {
                case Z_STREAM_END:
                    return output
                case Z_OK:
                    if stream.avail_in == 0 && produced == 0 { throw Failure.invalid("the gzip data is truncated") }
                case Z_BUF_ERROR:
                    throw Failure.invalid("the gzip data is truncated")
                default:
                    throw Failure.invalid(stream.msg.map { String(cString: $0) } ?? "invalid gzip data")
                }
            }
        }
    }
}
