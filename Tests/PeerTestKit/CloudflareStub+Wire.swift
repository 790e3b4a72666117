import Foundation
import HTTPTypes
import Logging
import Hummingbird
import NIOCore
import NIOFoundationCompat
import NIOConcurrencyHelpers

/// The JSON the stand-in reads and writes: the shapes of the Cloudflare API v4 (../shared/specs/cloudflare-dns.md).
extension CloudflareStub {
    struct StubState: Encodable {
        struct M: Encodable {
            var at: Double
            var call: String
            var deleted: [Record]
            var created: [Record]
            var after: [Record]
            /// The leader's term the call's comments name, if any.
            var term: UInt64?
        }
        struct N: Encodable {
            var at: Double
            var backend: String
            var title: String
            var body: String
        }
        var records: [Record]
        var calls: Int
        var mutations: [M]
        var notifications: [N]
    }

    struct NewRecord: Codable {
        var type: String
        var name: String
        var content: String?
        var ttl: Int?
        var proxied: Bool?
        var comment: String?
    }

    /// A patch of a batch: the record's id and the fields to change.
    struct Patch: Codable {
        var id: String?
        var type: String?
        var name: String?
        var content: String?
        var ttl: Int?
        var proxied: Bool?
        var comment: String?
    }

    struct Batch: Codable {
        struct ID: Codable { var id: String }
        var deletes: [ID]?
        var patches: [Patch]?
        var puts: [NewRecord]?
        var posts: [NewRecord]?
    }

    struct BatchResult: Encodable {
        var deletes: [Record]
        var patches: [Record]
        var puts: [Record]
        var posts: [Record]
    }

    struct Message: Encodable {
        var code: Int
        var message: String
    }

    struct ResultInfo: Encodable {
        var count: Int
        var page: Int
        var per_page: Int
        var total_count: Int
        var total_pages: Int
    }

    struct SuccessEnvelope: Encodable {
        var success = true
        var errors: [Message] = []
        var messages: [Message] = []
        var result: AnyEncodable
        var result_info: ResultInfo?
    }

    struct FailureEnvelope: Encodable {
        var success = false
        var errors: [Message]
        var messages: [Message] = []
        var result: String? = nil

        func encode(to encoder: any Encoder) throws {
            var c = encoder.container(keyedBy: CodingKeys.self)
            try c.encode(success, forKey: .success)
            try c.encode(errors, forKey: .errors)
            try c.encode(messages, forKey: .messages)
            try c.encodeNil(forKey: .result)
        }
        enum CodingKeys: String, CodingKey { case success, errors, messages, result }
    }

    struct AnyEncodable: Encodable {
        let value: any Encodable
        init(_ value: any Encodable) { self.value = value }
        func encode(to encoder: any Encoder) throws { try value.encode(to: encoder) }
    }
}
