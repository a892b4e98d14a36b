import Foundation

/// Special functions and series for the customer-base models (internal; namespaced so nothing clashes).
enum CustomerBaseMath {
    /// The digamma function ψ(x) = d/dx ln Γ(x): recurrence up to x ≥ 10, then the asymptotic series (error < 1e-15);
    /// reflection for negative x. NaN at the poles (0, −1, −2, …).
    static func digamma(_ value: Double) -> Double {
        guard value.isFinite else { return value == .infinity ? .infinity : .nan }
        if value <= 0 {
            if value == value.rounded(.down) { return .nan }
            return digamma(1 - value) - Double.pi / tan(Double.pi * value)
        }
        var x = value
        var result = 0.0
        while x < 10 {
            result -= 1 / x
            x += 1
        }
        let f = 1 / (x * x)
        let tail = f * (1.0 / 12 - f * (1.0 / 120 - f * (1.0 / 252 - f * (1.0 / 240 - f * (1.0 / 132 - f * 691.0 / 32_760)))))
        return result + log(x) - 0.5 / x - tail
    }

    /// log(exp(a) + exp(b)) without overflow.
    static func logAddExp(_ a: Double, _ b: Double) -> Double {
        if a == -.infinity { return b }
        if b == -.infinity { return a }
        return a > b ? a + log1p(exp(b - a)) : b + log1p(exp(a - b))
    }

    /// The hypergeometric-type series Σ_{k≥0} t_k with t_0 = 1 and t_{k+1} / t_k = (p + k)(q + k) z / ((s + k)(u + k)),
    /// summed with positive and negative terms apart, in a floating scale (the partial sums are divided by 10^200
    /// whenever they pass 10^200), so that series with huge terms cannot overflow; the result is returned as a log.
    ///
    /// It stops when the series terminates (a ratio of 0) or, past the last index where the ratio can still rise
    /// above z, when the remaining terms, bounded by a geometric series of ratio max(|ratio|, z), fall below 1e-16 of
    /// the sum. Needs 0 ≤ z < 1 and s + k, u + k ≠ 0 for every k.
    /// - Returns: log |sum|, the sum's sign, and whether the stopping test was met within `maxTerms` terms.
    static func logSeries(
        _ p: Double, _ q: Double, _ s: Double, _ u: Double, z: Double, maxTerms: Int = 2_000_000
    ) -> (logMagnitude: Double, sign: Double, converged: Bool) {
        // ratio / z − 1 has the sign of (p + q − s − u)k + (pq − su): once past its root the ratio stays on one side
        // of z and moves towards it monotonically (for the k where the factors have settled their signs).
        let slope = p + q - s - u
        let intercept = p * q - s * u
        var settled = max(0, -p, -q, -s, -u) + 1
        if slope > 0 && intercept < 0 { settled = max(settled, -intercept / slope + 1) }
        let rescale = 1e200
        let logRescale = 200 * log(10.0)
        var term = 1.0
        var positive = 1.0
        var negative = 0.0
        var logScale = 0.0
        var converged = false
        var k = 0.0
        for _ in 0..<maxTerms {
            let rho = (p + k) * (q + k) / ((s + k) * (u + k)) * z
            guard rho.isFinite else { break }
            if rho == 0 {
                converged = true
                break
            }
            term *= rho
            if term > 0 { positive += term } else { negative -= term }
            if positive > rescale || negative > rescale || abs(term) > rescale {
                term /= rescale
                positive /= rescale
                negative /= rescale
                logScale += logRescale
            }
            k += 1
            let bound = max(abs(rho), z)
            if k > settled && bound < 1 && abs(term) * bound <= 1e-16 * max(positive, negative) * (1 - bound) {
                converged = true
                break
            }
        }
        let sum = positive - negative
        return (log(abs(sum)) + logScale, sum < 0 ? -1 : 1, converged)
    }

    /// The Gauss hypergeometric function ₂F₁(a, b; c; z) for 0 ≤ z < 1 by its power series in log space; `c` must not
    /// be 0 or a negative integer. Returns log |₂F₁| and its sign; NaN for z outside [0, 1) or a series that did not
    /// converge.
    static func logHypergeometric2F1(
        _ a: Double, _ b: Double, _ c: Double, _ z: Double
    ) -> (
        logMagnitude: Double, sign: Double
    ) {
        guard z >= 0, z < 1 else { return (.nan, .nan) }
        if z == 0 { return (0, 1) }
        let series = logSeries(a, b, c, 1, z: z)
        guard series.converged else { return (.nan, .nan) }
        return (series.logMagnitude, series.sign)
    }
}

/// Unconstrained minimization for the model fits: BFGS with an Armijo backtracking line search on an analytic
/// gradient, with a Nelder–Mead restart when BFGS stalls away from a stationary point (internal).
enum CustomerBaseOptimizer {
    /// An objective's value and gradient at a point; a non-finite value marks a point to avoid.
    typealias Objective = ([Double]) -> (value: Double, gradient: [Double])

    /// The outcome of a minimization.
    struct Result {
        var point: [Double]
        var value: Double
        var gradient: [Double]
        var iterations: Int
        var converged: Bool
        /// Converged on a plateau (see ``bfgs(_:start:gradientTolerance:stallTolerance:maxIterations:maxStep:plateauIterations:plateauTolerance:)``)
        /// rather than at a stationary point: another start may still find a better one.
        var plateau = false
    }

    /// Minimizes `objective` from `start` with BFGS; converged when the largest gradient component is below
    /// `gradientTolerance`, or when the gradient is below `stallTolerance` and the value has stopped decreasing (no
    /// acceptable step, or 5 steps in a row that lower it by less than 1e-14 relative: the objective's rounding level
    /// on flat ridges such as the Gamma-Gamma likelihood's), or when `plateauIterations` steps together lowered it by
    /// less than `plateauTolerance` relative (a ridge running to an edge of the parameter space).
    static func bfgs(
        _ objective: Objective, start: [Double], gradientTolerance: Double = 1e-9, stallTolerance: Double = 1e-6,
        maxIterations: Int = 500, maxStep: Double = 4, plateauIterations: Int = 25, plateauTolerance: Double = 1e-11
    ) -> Result {
        let n = start.count
        var x = start
        var (f, g) = objective(x)
        var h = identity(n)
        var fresh = true
        var iterations = 0
        var stalled = 0
        var history: [Double] = []
        guard f.isFinite else { return Result(point: x, value: f, gradient: g, iterations: 0, converged: false) }
        while iterations < maxIterations {
            if maxAbs(g) < gradientTolerance {
                return Result(point: x, value: f, gradient: g, iterations: iterations, converged: true)
            }
            iterations += 1
            var d = (0..<n).map { i in -(0..<n).reduce(0.0) { $0 + h[i][$1] * g[$1] } }
            var slope = dot(g, d)
            if !(slope < 0) {
                h = identity(n)
                fresh = true
                d = g.map { -$0 }
                slope = dot(g, d)
            }
            // Keep steps in log-parameter space bounded so exp() cannot overflow on a wild direction.
            var step = min(1, maxStep / max(maxAbs(d), 1e-300))
            var accepted: (x: [Double], f: Double, g: [Double])?
            for _ in 0..<60 {
                let candidate = (0..<n).map { x[$0] + step * d[$0] }
                let (fc, gc) = objective(candidate)
                if fc.isFinite, fc <= f + 1e-4 * step * slope, gc.allSatisfy(\.isFinite) {
                    accepted = (candidate, fc, gc)
                    break
                }
                step *= 0.5
            }
            guard let next = accepted else {
                if !fresh {
                    // Retry along the steepest descent before giving up.
                    h = identity(n)
                    fresh = true
                    continue
                }
                let small = maxAbs(g) < stallTolerance
                return Result(point: x, value: f, gradient: g, iterations: iterations, converged: small)
            }
            let s = (0..<n).map { next.x[$0] - x[$0] }
            let y = (0..<n).map { next.g[$0] - g[$0] }
            let sy = dot(s, y)
            if sy > 1e-14 * sqrt(dot(s, s) * dot(y, y)) && sy > 0 {
                if fresh {
                    // Scale the first inverse Hessian guess to the curvature seen.
                    let scale = sy / dot(y, y)
                    h = identity(n).map { $0.map { $0 * scale } }
                    fresh = false
                }
                let rho = 1 / sy
                let hy = (0..<n).map { i in (0..<n).reduce(0.0) { $0 + h[i][$1] * y[$1] } }
                let yhy = dot(y, hy)
                for i in 0..<n {
                    for j in 0..<n {
                        h[i][j] += (1 + rho * yhy) * rho * s[i] * s[j] - rho * (hy[i] * s[j] + s[i] * hy[j])
                    }
                }
            }
            stalled = f - next.f <= 1e-14 * (1 + abs(f)) ? stalled + 1 : 0
            x = next.x
            f = next.f
            g = next.g
            if stalled >= 5 && maxAbs(g) < stallTolerance {
                return Result(point: x, value: f, gradient: g, iterations: iterations, converged: true)
            }
            // A plateau: the parameters run along a ridge towards an edge of the parameter space (no dropout, no
            // spread in spend, …) where the likelihood no longer changes; the model's predictions do not either.
            history.append(f)
            if history.count > plateauIterations {
                let earlier = history[history.count - 1 - plateauIterations]
                if earlier - f <= plateauTolerance * (1 + abs(f)) {
                    return Result(point: x, value: f, gradient: g, iterations: iterations, converged: true, plateau: true)
                }
            }
        }
        return Result(point: x, value: f, gradient: g, iterations: iterations, converged: maxAbs(g) < gradientTolerance)
    }

    /// Nelder–Mead on the objective's value alone, from a simplex of side `scale` around `start`; used to move away
    /// from a point where BFGS stalled. Returns the best vertex.
    static func nelderMead(
        _ objective: Objective, start: [Double], scale: Double = 0.5, maxIterations: Int = 2_000, tolerance: Double = 1e-12
    ) -> (point: [Double], value: Double, iterations: Int) {
        let n = start.count
        func value(_ p: [Double]) -> Double {
            let v = objective(p).value
            return v.isFinite ? v : .infinity
        }
        var simplex = [start]
        for i in 0..<n {
            var p = start
            p[i] += scale
            simplex.append(p)
        }
        var values = simplex.map(value)
        var iterations = 0
        while iterations < maxIterations {
            iterations += 1
            let order = values.indices.sorted { values[$0] < values[$1] }
            simplex = order.map { simplex[$0] }
            values = order.map { values[$0] }
            if let worst = values.last, worst.isFinite, abs(worst - values[0]) <= tolerance * (1 + abs(values[0])) {
                break
            }
            let centroid = (0..<n).map { i in simplex.dropLast().reduce(0.0) { $0 + $1[i] } / Double(n) }
            func along(_ t: Double) -> [Double] { (0..<n).map { centroid[$0] + t * (simplex[n][$0] - centroid[$0]) } }
            let reflected = along(-1)
            let fr = value(reflected)
            if fr < values[0] {
                let expanded = along(-2)
                let fe = value(expanded)
                (simplex[n], values[n]) = fe < fr ? (expanded, fe) : (reflected, fr)
            } else if fr < values[n - 1] {
                (simplex[n], values[n]) = (reflected, fr)
            } else {
                let contracted = fr < values[n] ? along(-0.5) : along(0.5)
                let fc = value(contracted)
                if fc < min(fr, values[n]) {
                    (simplex[n], values[n]) = (contracted, fc)
                } else {
                    for i in 1...n {
                        simplex[i] = (0..<n).map { simplex[0][$0] + 0.5 * (simplex[i][$0] - simplex[0][$0]) }
                        values[i] = value(simplex[i])
                    }
                }
            }
        }
        let best = values.indices.min { values[$0] < values[$1] } ?? 0
        return (simplex[best], values[best], iterations)
    }

    /// BFGS from each start in turn, with a Nelder–Mead restart from where it stalled; the first result converged at a
    /// stationary point, else the lowest plateau, else the lowest result (not converged).
    static func minimize(_ objective: Objective, starts: [[Double]], gradientTolerance: Double = 1e-9) -> Result {
        var best: Result?
        var iterations = 0
        for start in starts {
            var result = bfgs(objective, start: start, gradientTolerance: gradientTolerance)
            iterations += result.iterations
            if !result.converged {
                let simplex = nelderMead(objective, start: result.value.isFinite ? result.point : start)
                iterations += simplex.iterations
                result = bfgs(objective, start: simplex.point, gradientTolerance: gradientTolerance)
                iterations += result.iterations
            }
            result.iterations = iterations
            if result.converged && !result.plateau { return result }
            // A plateau or a failure: keep the best, converged ones first, and try the other starts.
            if let current = best {
                let better =
                    result.converged != current.converged ? result.converged : result.value < current.value
                if !better {
                    best?.iterations = iterations
                    continue
                }
            }
            best = result
        }
        return best ?? Result(point: starts.first ?? [], value: .nan, gradient: [], iterations: 0, converged: false)
    }

    static func identity(_ n: Int) -> [[Double]] {
        (0..<n).map { i in (0..<n).map { $0 == i ? 1.0 : 0.0 } }
    }

    static func dot(_ a: [Double], _ b: [Double]) -> Double {
        zip(a, b).reduce(0.0) { $0 + $1.0 * $1.1 }
    }

    static func maxAbs(_ a: [Double]) -> Double {
        a.reduce(0.0) { max($0, abs($1)) }
    }
}
