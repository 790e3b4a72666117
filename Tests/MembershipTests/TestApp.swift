import Membership

/// What the membership tests gossip: an app's health and image (peer's own payload lives in `Cluster`).
struct AppStatus: SWIMPayload {
    var healthy: Bool?
    var image: String?
    static let none = AppStatus(healthy: nil, image: nil)
}

typealias SWIM = Membership.SWIM<AppStatus>
typealias MemberState = Membership.MemberState<AppStatus>
