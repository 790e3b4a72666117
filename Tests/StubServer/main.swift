import Foundation
import PeerTestKit

// peer-stub HOST PORT ZONE TOKEN_FILE: the Cloudflare API v4 stand-in (and notification recorders) of the test
// kit as a process, for the cluster/ scripts. Not part of what peer ships.
let arguments = CommandLine.arguments
guard arguments.count == 5, let port = Int(arguments[2]),
    let token = try? String(contentsOfFile: arguments[4], encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
else {
    FileHandle.standardError.write(Data("usage: peer-stub HOST PORT ZONE TOKEN_FILE\n".utf8))
    exit(64)
}
let stub = CloudflareStub(token: token, zone: arguments[3])
try await stub.run(host: arguments[1], port: port) { bound in
    FileHandle.standardOutput.write(Data("cloudflare stub on http://\(arguments[1]):\(bound)/client/v4 (zone \(arguments[3]))\n".utf8))
}
