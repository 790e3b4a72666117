import Foundation
import X509

/// What an operator certificate allows over the mesh port, written into it by the CA (a subject alternative name
/// `peer-scope:NAME` per scope), so it cannot be widened without the CA key.
///
/// - `read`: status, members, who, deploy history, revocations;
/// - `deploy`: read, and deploy, roll back, follow and cancel rollouts (CI);
/// - `tls`: read, and install the origin certificate;
/// - `admin`: everything.
///
/// A certificate that names no scope (issued before scopes) allows everything, as it did.
public enum OperatorScope: String, Sendable, Hashable, Codable, CaseIterable, Comparable {
    case read, deploy, tls, admin

    static let uriPrefix = "peer-scope:"
    /// The longest an operator certificate is issued for (`peerctl cert issue-operator --days`).
    public static let maximumDays = 397

    /// The scopes `certificate` names; every scope when it names none (a certificate from before scopes).
    public static func scopes(of certificate: Certificate) -> Set<OperatorScope> {
        let names = ((try? certificate.extensions.subjectAlternativeNames) ?? nil).map(Array.init) ?? []
        let scopes = names.compactMap { name -> String? in
            guard case .uniformResourceIdentifier(let uri) = name, uri.hasPrefix(uriPrefix) else { return nil }
            return String(uri.dropFirst(uriPrefix.count))
        }
        // A scope of a newer peer's is no scope here.
        return scopes.isEmpty ? Set(allCases) : Set(scopes.compactMap(OperatorScope.init(rawValue:)))
    }

    /// Whether holding `scopes` allows what needs `self` (admin allows everything; every scope allows read).
    public func isAllowed(by scopes: Set<OperatorScope>) -> Bool {
        scopes.contains(.admin) || scopes.contains(self) || (self == .read && !scopes.isEmpty)
    }

    /// Parses `read,deploy`; says which word is not a scope.
    public static func parse(_ list: String) throws -> Set<OperatorScope> {
        var scopes: Set<OperatorScope> = []
        for word in list.split(separator: ",").map({ $0.trimmingCharacters(in: .whitespaces) }) where !word.isEmpty {
            guard let scope = OperatorScope(rawValue: word) else {
                throw ClusterCA.Failure(description: "\"\(word)\" is not a scope: use read, deploy, tls or admin (comma-separated)")
            }
            scopes.insert(scope)
        }
        guard !scopes.isEmpty else { throw ClusterCA.Failure(description: "no scope given: use read, deploy, tls or admin (comma-separated)") }
        return scopes
    }

    public static func < (a: OperatorScope, b: OperatorScope) -> Bool {
        allCases.firstIndex(of: a)! < allCases.firstIndex(of: b)!
    }
}
