// swift-tools-version:6.0
import PackageDescription

let strict: [SwiftSetting] = [.enableUpcomingFeature("ExistentialAny")]

let package = Package(
    name: "peer",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "peerd", targets: ["peerd"]),
        .executable(name: "peerctl", targets: ["peerctl"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/jpsim/Yams.git", from: "6.2.2"),
        .package(url: "https://github.com/swift-server/async-http-client.git", from: "1.37.0"),
        .package(url: "https://github.com/hummingbird-project/hummingbird.git", from: "2.28.1"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-certificates.git", from: "1.21.1"),
        .package(url: "https://github.com/apple/swift-crypto.git", "3.12.3"..<"5.0.0"),
        .package(url: "https://github.com/apple/swift-asn1.git", from: "1.7.4"),
        .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.37.6"),
        .package(url: "https://github.com/apple/swift-http-types.git", from: "1.0.0"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
    ],
    targets: [
        // Pure: no I/O, no NIO.
        .target(name: "PeerCore", swiftSettings: strict),
        // Process-level settings of peerd in C: the Swift runtime's enqueue hook, releasing start-up pages.
        .target(name: "CPeerProcess"),
        .target(name: "Deployment", dependencies: ["PeerCore"], swiftSettings: strict),
        .target(name: "Membership", dependencies: ["PeerCore"], swiftSettings: strict),
        .target(name: "Leadership", dependencies: ["PeerCore"], swiftSettings: strict),
        // One node of the mesh (SWIM + lease) as a pure state machine, and the cluster state it publishes.
        .target(name: "Cluster", dependencies: ["PeerCore", "Deployment", "Membership", "Leadership", "DNSPlanning"], swiftSettings: strict),
        .target(name: "DNSPlanning", dependencies: ["PeerCore"], swiftSettings: strict),
        // Crash-safe files (atomic replace, modes from creation).
        .target(name: "PeerFiles", swiftSettings: strict),

        // Cluster CA and certificates (swift-certificates, P-256).
        .target(
            name: "PKI",
            dependencies: [
                "PeerCore",
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "SwiftASN1", package: "swift-asn1"),
            ],
            swiftSettings: strict
        ),

        // The mesh: mutual TLS 1.3 listener and dialer, length-prefixed frames, versioned codec.
        .target(
            name: "Transport",
            dependencies: [
                "PKI", "PeerCore",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "SwiftASN1", package: "swift-asn1"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOFoundationCompat", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOTLS", package: "swift-nio"),
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),

        // The node's own file: loading and validation with file:line errors, setup bundles.
        .target(
            name: "PeerConfiguration",
            dependencies: ["PeerCore", "Deployment", "Membership", "Leadership", "Nginx", .product(name: "Yams", package: "Yams")],
            swiftSettings: strict
        ),
        // The control API: its request and response types, and the clients peerctl uses (unix socket, mesh).
        .target(
            name: "Control",
            dependencies: [
                "PeerCore", "Deployment", "PKI", "Transport",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOFoundationCompat", package: "swift-nio"),
                .product(name: "X509", package: "swift-certificates"),
            ],
            swiftSettings: strict
        ),

        // Real adapters.
        .target(
            name: "Docker",
            dependencies: [
                "Deployment",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOFoundationCompat", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),
        .target(
            name: "CloudflareDNS",
            dependencies: [
                "DNSPlanning",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOFoundationCompat", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),
        .target(
            name: "Notify",
            dependencies: [
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOFoundationCompat", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),
        .target(
            name: "Nginx",
            dependencies: [
                "Deployment", "PeerFiles", "PKI",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),

        // Wiring: config, state, swap runner, control API.
        .target(
            name: "PeerDaemon",
            dependencies: [
                "PeerCore", "Deployment", "PeerFiles", "Docker", "Nginx", "Membership", "Cluster", "Transport", "PKI", "PeerConfiguration", "Control",
                "Leadership", "DNSPlanning", "CloudflareDNS", "Notify", "CPeerProcess",
                .product(name: "Yams", package: "Yams"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOFoundationCompat", package: "swift-nio"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: strict
        ),
        .executableTarget(
            name: "peerd",
            dependencies: [
                "PeerDaemon", "PeerConfiguration", "Control",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                "CPeerProcess",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ],
            swiftSettings: strict
        ),
        .executableTarget(
            name: "peerctl",
            dependencies: [
                "Control", "PeerConfiguration", "Deployment", "Leadership", "PKI", "PeerFiles", "PeerCore",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: strict
        ),

        // Test kit (not a product).
        .target(
            name: "PeerTestKit",
            dependencies: [
                "PeerCore", "Deployment", "PeerDaemon", "PKI", "PeerConfiguration", "Control",
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOFoundationCompat", package: "swift-nio"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
            ],
            path: "Tests/PeerTestKit",
            swiftSettings: strict
        ),
        // The Cloudflare API / notification stand-in as a process, for cluster/ scripts (benchmarks, demo).
        .executableTarget(name: "peer-stub", dependencies: ["PeerTestKit"], path: "Tests/StubServer", swiftSettings: strict),
        .testTarget(name: "DeploymentTests", dependencies: ["Deployment", "PeerTestKit", "SimulationKit"], swiftSettings: strict),
        .testTarget(name: "LeadershipTests", dependencies: ["Leadership", "DNSPlanning", "PeerCore", "SimulationKit"], swiftSettings: strict),
        .testTarget(name: "MembershipTests", dependencies: ["Membership", "PeerCore", "SimulationKit"], swiftSettings: strict),
        .testTarget(name: "ClusterTests", dependencies: ["Cluster", "Membership", "Leadership", "Deployment", "DNSPlanning", "PeerCore", "SimulationKit"], swiftSettings: strict),
        // The simulated network every protocol simulation runs on.
        .target(name: "SimulationKit", dependencies: ["PeerCore"], path: "Tests/SimulationKit", swiftSettings: strict),
        .testTarget(
            name: "PeerDaemonTests",
            dependencies: [
                "PeerDaemon", "PeerCore", "Membership", "Cluster", "Nginx", "Deployment", "Leadership", "PKI", "PeerConfiguration", "Control",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            exclude: ["Fixtures"],
            swiftSettings: strict
        ),
        .testTarget(
            name: "TransportTests",
            dependencies: [
                "Transport", "PKI", "PeerCore", "PeerTestKit",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),
        // The command lines in README and docs/ against the real argument parsers.
        .testTarget(
            name: "CommandLineTests",
            dependencies: ["peerctl", "peerd", "Control", .product(name: "ArgumentParser", package: "swift-argument-parser")],
            swiftSettings: strict
        ),
        .testTarget(name: "PKITests", dependencies: ["PKI", "PeerTestKit", .product(name: "X509", package: "swift-certificates")], swiftSettings: strict),
        .testTarget(
            name: "IntegrationTests",
            dependencies: ["PeerDaemon", "PeerConfiguration", "Control", "Deployment", "Docker", "Nginx", "PeerTestKit", "CloudflareDNS", "DNSPlanning", "Notify", "PKI"],
            swiftSettings: strict
        ),
    ]
)
