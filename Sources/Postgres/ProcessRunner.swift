import Foundation

/// Runs a program to completion and captures what it printed: the embedded server's tools, and the `tributary`
/// and `psql` processes that tests and benchmarks start.
///
/// It blocks the calling thread; from async code, call ``runDetached(_:_:as:environment:directory:separateErrors:)``, which waits on
/// a thread of its own rather than on one of the cooperative pool's.
public enum ProcessRunner {
    public struct Output: Sendable {
        /// The exit status (128 + the signal number if a signal ended it).
        public var status: Int32
        /// Standard output, and standard error interleaved as written unless it was captured separately.
        public var text: String
        /// Standard error, when captured separately.
        public var errorText: String = ""
        /// The last few lines, for error messages.
        public var tail: String {
            text.split(whereSeparator: \.isNewline).suffix(6).joined(separator: " | ")
        }
    }

    /// Runs `executable` with `arguments`, as `user` (through `runuser`) when given, with standard input from
    /// /dev/null and standard output and error captured together.
    ///
    /// Uses `posix_spawn` and `waitpid` directly: Foundation's `Process` can miss the exit of a child whose own
    /// children (such as the postmaster `pg_ctl` starts) outlive it.
    public static func run(
        _ executable: String, _ arguments: [String], as user: String? = nil,
        environment: [String: String]? = nil, directory: String = "/", separateErrors: Bool = false
    ) throws -> Output {
        var argv = [executable] + arguments
        var program = executable
        if let user {
            guard let runuser = which("runuser") else {
                throw PostgresError(
                    .embeddedServer,
                    "running as root, Tributary must start PostgreSQL as the '\(user)' user, but 'runuser' was not found",
                    hint: "install util-linux (apt-get install util-linux), run Tributary as a non-root user, or set DATABASE_URL"
                )
            }
            program = runuser
            argv = [runuser, "-u", user, "--"] + argv
        }
        // Start in `directory` (by default /: the server user may not be able to enter the caller's directory).
        argv = ["/bin/sh", "-c", "cd -- \"$0\" && exec \"$@\"", directory] + argv
        program = "/bin/sh"
        var pipeEnds: [Int32] = [0, 0]
        guard pipe(&pipeEnds) == 0 else {
            throw PostgresError(.embeddedServer, "cannot create a pipe: \(String(cString: strerror(errno)))")
        }
        _ = fcntl(pipeEnds[0], F_SETFD, FD_CLOEXEC)
        _ = fcntl(pipeEnds[1], F_SETFD, FD_CLOEXEC)
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_adddup2(&actions, pipeEnds[1], 1)
        let errorFile =
            separateErrors
            ? FileManager.default.temporaryDirectory.appendingPathComponent("stderr-\(UUID().uuidString)").path : nil
        if let errorFile {
            posix_spawn_file_actions_addopen(&actions, 2, errorFile, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        } else {
            posix_spawn_file_actions_adddup2(&actions, pipeEnds[1], 2)
        }
        defer { if let errorFile { unlink(errorFile) } }
        let pid: pid_t
        do {
            pid = try spawn(program, argv, environment: environment, actions: &actions)
        } catch {
            close(pipeEnds[0])
            close(pipeEnds[1])
            throw error
        }
        close(pipeEnds[1])
        var output = [UInt8]()
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let count = read(pipeEnds[0], &buffer, buffer.count)
            if count > 0 {
                output.append(contentsOf: buffer[0..<count])
            } else if count < 0 && errno == EINTR {
                continue
            } else {
                break
            }
        }
        close(pipeEnds[0])
        var result = Output(status: wait(pid), text: String(decoding: output, as: UTF8.self))
        if let errorFile { result.errorText = (try? String(contentsOfFile: errorFile, encoding: .utf8)) ?? "" }
        return result
    }

    /// ``run(_:_:as:environment:directory:separateErrors:)`` on a thread of its own, for async callers.
    public static func runDetached(
        _ executable: String, _ arguments: [String], as user: String? = nil,
        environment: [String: String]? = nil, directory: String = "/", separateErrors: Bool = false
    ) async throws -> Output {
        try await runOffCooperativePool {
            try run(
                executable, arguments, as: user, environment: environment, directory: directory,
                separateErrors: separateErrors)
        }
    }

    /// Starts a program in the background with its output appended to `logFile`; returns its process id.
    /// Stop it with `kill(pid, SIGTERM)` (or `SIGKILL`) and reap it with ``wait(_:)``.
    public static func start(
        _ executable: String, _ arguments: [String], environment: [String: String]? = nil, logFile: String
    ) throws -> pid_t {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, logFile, O_WRONLY | O_CREAT | O_APPEND, 0o644)
        posix_spawn_file_actions_adddup2(&actions, 1, 2)
        return try spawn(executable, [executable] + arguments, environment: environment, actions: &actions)
    }

    /// `posix_spawn` with `argv` and the given environment (nil: this process's), as C arrays; returns the pid.
    private static func spawn(
        _ program: String, _ argv: [String], environment: [String: String]?, actions: inout posix_spawn_file_actions_t
    ) throws -> pid_t {
        let variables = environment.map { $0.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" } }
        var pid: pid_t = 0
        let status = withCStrings(argv) { args in
            UnsafeRawPointer(args).withMemoryRebound(to: UnsafeMutablePointer<CChar>?.self, capacity: argv.count + 1) {
                argsPointer in
                guard let variables else { return posix_spawn(&pid, program, &actions, nil, argsPointer, environ) }
                return withCStrings(variables) { env in
                    UnsafeRawPointer(env).withMemoryRebound(
                        to: UnsafeMutablePointer<CChar>?.self, capacity: variables.count + 1
                    ) { posix_spawn(&pid, program, &actions, nil, argsPointer, $0) }
                }
            }
        }
        guard status == 0 else {
            throw PostgresError(.embeddedServer, "could not run \(program): \(String(cString: strerror(status)))")
        }
        return pid
    }

    /// Waits for a process started with ``start(_:_:environment:logFile:)`` to end; returns its exit status.
    @discardableResult
    public static func wait(_ pid: pid_t) -> Int32 {
        var exitStatus: Int32 = 0
        while waitpid(pid, &exitStatus, 0) < 0 && errno == EINTR {}
        return (exitStatus & 0x7f) == 0 ? (exitStatus >> 8) & 0xff : 128 + (exitStatus & 0x7f)
    }

    /// The first executable called `name` on `PATH` (and the sbin directories, which root's tools live in).
    public static func which(_ name: String) -> String? {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? ""
        let directories = path.split(separator: ":").map(String.init) + ["/usr/sbin", "/sbin", "/usr/bin", "/bin"]
        return directories.map { "\($0)/\(name)" }.first { FileManager.default.isExecutableFile(atPath: $0) }
    }
}
