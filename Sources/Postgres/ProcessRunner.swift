import Foundation

/// Runs a program to completion and captures what it printed; for the embedded server's tools.
enum ProcessRunner {
    struct Output {
        var status: Int32
        var text: String
        /// The last few lines, for error messages.
        var tail: String {
            text.split(whereSeparator: \.isNewline).suffix(6).joined(separator: " | ")
        }
    }

    /// Runs `executable` with `arguments`, as `user` (through `runuser`) when given, with standard input from
    /// /dev/null and standard output and error captured together.
    ///
    /// Uses `posix_spawn` and `waitpid` directly: Foundation's `Process` can miss the exit of a child whose own
    /// children (such as the postmaster `pg_ctl` starts) outlive it.
    static func run(_ executable: String, _ arguments: [String], as user: String? = nil) throws -> Output {
        var argv = [executable] + arguments
        var program = executable
        if let user {
            guard let runuser = which("runuser") else {
                throw PostgresError(
                    .embeddedServer,
                    "running as root, Tributary must start PostgreSQL as the '\(user)' user, but 'runuser' was not found",
                    hint: "install util-linux (apt-get install util-linux), run Tributary as a non-root user, or set DATABASE_URL")
            }
            program = runuser
            argv = [runuser, "-u", user, "--"] + argv
        }
        // Start in / : the server user may not be able to enter the caller's directory.
        argv = ["/bin/sh", "-c", "cd / && exec \"$@\"", "sh"] + argv
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
        posix_spawn_file_actions_adddup2(&actions, pipeEnds[1], 2)
        var pid: pid_t = 0
        let status = withCStrings(argv) { args in
            UnsafeRawPointer(args).withMemoryRebound(to: UnsafeMutablePointer<CChar>?.self, capacity: argv.count + 1) {
                posix_spawn(&pid, program, &actions, nil, $0, environ)
            }
        }
        close(pipeEnds[1])
        guard status == 0 else {
            close(pipeEnds[0])
            throw PostgresError(.embeddedServer, "could not run \(program): \(String(cString: strerror(status)))")
        }
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
        var exitStatus: Int32 = 0
        while waitpid(pid, &exitStatus, 0) < 0 && errno == EINTR {}
        let code = (exitStatus & 0x7f) == 0 ? (exitStatus >> 8) & 0xff : 128 + (exitStatus & 0x7f)
        return Output(status: code, text: String(decoding: output, as: UTF8.self))
    }

    /// The first executable called `name` on `PATH` (and the sbin directories, which root's tools live in).
    static func which(_ name: String) -> String? {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? ""
        let directories = path.split(separator: ":").map(String.init) + ["/usr/sbin", "/sbin", "/usr/bin", "/bin"]
        return directories.map { "\($0)/\(name)" }.first { FileManager.default.isExecutableFile(atPath: $0) }
    }
}
