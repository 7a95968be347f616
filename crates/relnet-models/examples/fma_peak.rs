//! Measures this machine's fp32 peak: twelve independent chains of fused multiply-adds (enough to
//! cover the FMA latency on both FMA units) on every core at once, nothing loaded or stored, once
//! with 8-wide AVX2 code and once with 16-wide AVX-512 code where the CPU has AVX-512F (a host
//! without it prints SKIP), and the bf16 peak of `vdpbf16ps` where the CPU has AVX512-BF16
//! (each instruction 32 multiply-adds). The figure that docs/performance.md divides the training
//! step's GFLOP/s by: the AVX-512 peak where the host has it (the bf16 peak for bf16 steps).
//! `cargo run --release -p relnet-models --example fma_peak` (x86-64).
use std::time::Instant;

use relnet_models::peaks::Chain;

/// Runs `chain` on every thread three times and prints GFLOP/s.
fn measure(what: &str, chain: Chain) {
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let iters = 200_000_000u64 * 8 / chain.width() as u64;
    let flop_per_thread = iters as f64 * 12.0 * chain.width() as f64 * 2.0;
    for run in 0..3 {
        let t = Instant::now();
        let sums: Vec<f32> = std::thread::scope(|s| {
            let hs: Vec<_> =
                (0..threads).map(|i| s.spawn(move || chain.run(iters, 1e-3 * (i + 1) as f32).unwrap())).collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let secs = t.elapsed().as_secs_f64();
        println!(
            "{what} run {run}: {threads} threads, {:.1} GFLOP/s in all, {:.1} per thread (checksum {:.3})",
            flop_per_thread * threads as f64 / secs / 1e9,
            flop_per_thread / secs / 1e9,
            sums.iter().sum::<f32>()
        );
    }
}

fn main() {
    #[cfg(target_arch = "x86_64")]
    {
        let flags = ["avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16"];
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let line = cpuinfo.lines().find(|l| l.starts_with("flags")).unwrap_or("");
        let have: Vec<&str> = flags.into_iter().filter(|f| line.split_whitespace().any(|w| w == *f)).collect();
        println!("cpu flags: {}", have.join(" "));
        for (what, chain) in
            [("avx2", Chain::Avx2), ("avx512", Chain::Avx512), ("avx512-bf16 (vdpbf16ps)", Chain::Bf16)]
        {
            match chain.runs_here() {
                Ok(()) => measure(what, chain),
                Err(why) => println!("{what}: SKIP (this CPU has {why})"),
            }
        }
    }
}
