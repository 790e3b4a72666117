import PeerCore

/// What a swap needs from a container engine. The real one is the `Docker` target.
public protocol ContainerRuntime: Sendable {
    /// Makes the image present locally; throws with the registry's reason when it cannot.
    func pull(_ image: String) async throws
    /// Creates and starts a container and returns it with its assigned loopback host port.
    func start(_ spec: ContainerSpec) async throws -> AppInstance
    /// nil while running; the exit code once it stopped.
    func exitCode(of containerID: String) async throws -> Int?
    func logsTail(of containerID: String, lines: Int) async throws -> String
    /// Stops with a grace period (SIGTERM, then SIGKILL) and removes. Succeeds if it is already gone.
    func stopAndRemove(_ containerID: String, grace: Duration) async throws
    /// Every container carrying all of these labels (peer's scope: managed, node, app), running or not.
    func managedContainers(labels: [String: String]) async throws -> [ManagedContainer]
}

/// What a swap needs from the front proxy. The real one is the `Nginx` target.
public protocol FrontProxy: Sendable {
    /// Writes the config that routes to `instance` (nil: no upstream), validates it and reloads.
    /// Throws without changing what is served when validation or reload fails.
    func route(to instance: AppInstance?) async throws
    /// Whether requests through the public listener reach `instance` now; the error says what was seen.
    func verify(_ instance: AppInstance) async throws
    /// How many proxy workers from before the last `route` are still alive (they may hold requests to the old
    /// instance). Zero means the old instance has nothing in flight through the proxy.
    func workersFromBeforeLastRoute() async -> Int
    /// The generation and host port the proxy config on disk routes to, if peer wrote it.
    func routed() async -> (generation: Int, hostPort: Int)?
}

/// What the container for one generation looks like.
public struct ContainerSpec: Sendable, Hashable {
    public var name: String
    public var image: String
    public var generation: Int
    public var containerPort: Int
    public var env: [String]
    public var labels: [String: String]
    public var volumes: [String]
    public var restartPolicy: String
    public var extraHosts: [String]
    public var stopGrace: Duration

    public init(
        name: String, image: String, generation: Int, containerPort: Int, env: [String] = [],
        labels: [String: String] = [:], volumes: [String] = [], restartPolicy: String = "unless-stopped",
        extraHosts: [String] = [], stopGrace: Duration = .seconds(10)
    ) {
        self.name = name
        self.image = image
        self.generation = generation
        self.containerPort = containerPort
        self.env = env
        self.labels = labels
        self.volumes = volumes
        self.restartPolicy = restartPolicy
        self.extraHosts = extraHosts
        self.stopGrace = stopGrace
    }
}

/// A container found by peer's labels.
public struct ManagedContainer: Sendable, Hashable {
    public var id: String
    public var name: String
    public var image: String
    public var generation: Int
    public var running: Bool
    public var hostPort: Int?

    public init(id: String, name: String, image: String, generation: Int, running: Bool, hostPort: Int?) {
        self.id = id
        self.name = name
        self.image = image
        self.generation = generation
        self.running = running
        self.hostPort = hostPort
    }

    public var instance: AppInstance? {
        guard running, let hostPort else { return nil }
        return AppInstance(generation: generation, image: image, containerID: id, containerName: name, hostPort: hostPort)
    }
}

/// Labels that mark peer's containers.
public enum PeerLabels {
    public static let managed = "dev.peer.managed"
    public static let app = "dev.peer.app"
    public static let generation = "dev.peer.generation"
    public static let image = "dev.peer.image"
    public static let node = "dev.peer.node"
}
