/// The bookkeeping of a bounded connection pool, with no I/O: it decides, the pool acts.
///
/// Generic over the connection type so it is tested without a server. `open` counts every connection that
/// exists or is being created; it never exceeds `maxConnections`. Waiters are served first come, first served.
struct PoolStateMachine<Connection> {
    let maxConnections: Int
    private(set) var idle: [Connection] = []
    private(set) var open = 0
    private(set) var waiters: [Int] = []
    private(set) var isClosed = false

    init(maxConnections: Int) {
        precondition(maxConnections > 0, "a pool needs room for at least one connection")
        self.maxConnections = maxConnections
    }

    /// What a lease request, or a waiter being served, gets.
    enum Grant {
        /// Use this idle connection (check it is still alive first).
        case use(Connection)
        /// A slot is reserved: open a new connection in it.
        case connect
    }

    enum LeaseAction {
        case grant(Grant)
        /// No slot is free: wait until ``release(_:reusable:)`` or ``slotFreed()`` serves this waiter.
        case wait
        /// The pool is shut down.
        case closed
    }

    mutating func requestLease(waiter id: Int) -> LeaseAction {
        if isClosed { return .closed }
        if let connection = idle.popLast() { return .grant(.use(connection)) }
        if open < maxConnections {
            open += 1
            return .grant(.connect)
        }
        waiters.append(id)
        return .wait
    }

    /// A leased connection comes back. Returns the waiter to serve and what it gets, if any.
    mutating func release(_ connection: Connection, reusable: Bool) -> (waiter: Int, grant: Grant)? {
        guard reusable, !isClosed else { return slotFreed() }
        if !waiters.isEmpty { return (waiters.removeFirst(), .use(connection)) }
        idle.append(connection)
        return nil
    }

    /// A slot's connection is gone (it failed to open, or was found dead, or was discarded). Its slot passes to
    /// the first waiter, who opens a new connection in it.
    mutating func slotFreed() -> (waiter: Int, grant: Grant)? {
        if !waiters.isEmpty, !isClosed { return (waiters.removeFirst(), .connect) }
        open -= 1
        return nil
    }

    /// A waiter gave up (timed out or was cancelled). Returns false if it had already been served.
    mutating func removeWaiter(_ id: Int) -> Bool {
        guard let index = waiters.firstIndex(of: id) else { return false }
        waiters.remove(at: index)
        return true
    }

    /// Shuts the pool: returns the idle connections to close and the waiters to fail.
    mutating func close() -> (idle: [Connection], waiters: [Int]) {
        isClosed = true
        defer {
            open -= idle.count
            idle = []
            waiters = []
        }
        return (idle, waiters)
    }
}

extension PoolStateMachine.Grant: Sendable where Connection: Sendable {}
