@testable import Postgres
import Testing

/// The pool's decisions, without a server.
@Suite struct PoolStateMachineTests {
    typealias Machine = PoolStateMachine<String>

    func isConnect(_ action: Machine.LeaseAction) -> Bool {
        if case .grant(.connect) = action { return true }
        return false
    }

    @Test func opensUpToTheLimitThenQueuesWaitersInOrder() {
        var machine = Machine(maxConnections: 2)
        #expect(isConnect(machine.requestLease(waiter: 1)))
        #expect(isConnect(machine.requestLease(waiter: 2)))
        guard case .wait = machine.requestLease(waiter: 3) else { Issue.record("third should wait"); return }
        guard case .wait = machine.requestLease(waiter: 4) else { Issue.record("fourth should wait"); return }
        #expect(machine.open == 2 && machine.waiters == [3, 4])

        // A returned connection goes straight to the first waiter.
        guard case (3, .use("a"))? = machine.release("a", reusable: true) else { Issue.record("3 gets a"); return }
        // A broken one passes its slot on: the waiter opens a fresh connection.
        guard case (4, .connect)? = machine.release("b", reusable: false) else { Issue.record("4 connects"); return }
        #expect(machine.open == 2 && machine.waiters.isEmpty)

        #expect(machine.release("a", reusable: true) == nil)
        #expect(machine.idle == ["a"])
        guard case .grant(.use("a")) = machine.requestLease(waiter: 5) else { Issue.record("5 reuses a"); return }
    }

    @Test func failedConnectsAndDiscardsFreeTheirSlot() {
        var machine = Machine(maxConnections: 1)
        #expect(isConnect(machine.requestLease(waiter: 1)))
        #expect(machine.slotFreed() == nil)
        #expect(machine.open == 0)
        #expect(isConnect(machine.requestLease(waiter: 2)))
        #expect(machine.open == 1)
    }

    @Test func waitersThatGiveUpAreForgotten() {
        var machine = Machine(maxConnections: 1)
        _ = machine.requestLease(waiter: 1)
        _ = machine.requestLease(waiter: 2)
        _ = machine.requestLease(waiter: 3)
        let removed = machine.removeWaiter(2)
        let removedAgain = machine.removeWaiter(2)
        #expect(removed && !removedAgain)
        guard case (3, .use("x"))? = machine.release("x", reusable: true) else { Issue.record("3 gets x"); return }
    }

    @Test func closingFailsWaitersAndReturnsIdleConnections() {
        var machine = Machine(maxConnections: 2)
        _ = machine.requestLease(waiter: 1)
        _ = machine.requestLease(waiter: 2)
        _ = machine.release("a", reusable: true)
        _ = machine.requestLease(waiter: 3)
        _ = machine.requestLease(waiter: 4)
        let (idle, waiters) = machine.close()
        #expect(idle.isEmpty && waiters == [4])
        guard case .closed = machine.requestLease(waiter: 5) else { Issue.record("closed pool refuses"); return }
        #expect(machine.release("b", reusable: true) == nil)  // returned after close: dropped, not kept
        #expect(machine.idle.isEmpty)
    }
}

extension PoolStateMachine.Grant: Equatable where Connection: Equatable {
    public static func == (lhs: Self, rhs: Self) -> Bool {
        switch (lhs, rhs) {
        case (.use(let a), .use(let b)): a == b
        case (.connect, .connect): true
        default: false
        }
    }
}
