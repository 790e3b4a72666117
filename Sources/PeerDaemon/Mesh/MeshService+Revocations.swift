import Cluster
import PKI
import PeerCore
import Transport

extension MeshService {
    /// Enforces the revocations as they arrive: open connections with a revoked certificate are closed (members and
    /// operators), and a member whose certificate is revoked loses its datagram key, so nothing it sends counts
    /// and it is soon taken for dead (and its DNS record goes, as any dead node's).
    func revocationLoop() async {
        let wakeup = Wakeup()
        revocations.watch(wakeup)
        while !Task.isCancelled {
            let list = revocations.current
            if list != revocationGuard.list {
                for identity in revocationGuard.update(list) {
                    logger.warning("mesh connection cut: its certificate is revoked", metadata: ["mesh.identity": "\(identity)"])
                }
                await dropRevokedKeys(list)
            }
            await wakeup.wait(atMost: .seconds(3600), clock: clock)
        }
    }

    private func dropRevokedKeys(_ list: RevocationList) async {
        for (member, certificate) in certificates {
            guard let reason = list.refusal(of: certificate) else { continue }
            certificates[member] = nil
            datagrams.forget(member.name)
            logger.warning("mesh member cut off: its certificate is revoked", metadata: ["mesh.member": "\(member)", "reason": "\(reason)"])
            await lost(member, why: "its certificate is revoked")
        }
    }
}
