use super::*;
use crate::policy::ModelClass;

/// Whether the function has spent its miss budget (as `faaswap` counts it).
fn lost(c: &Cluster, f: FunctionId) -> bool {
    let func = &c.s.functions[&f];
    func.stats.lost(func.spec.percentile, crate::policy::policies::LOST_HORIZON)
}

const PAGE: u64 = 1 << 20;

fn spec(name: &str, pages: u64, exec_ms: f64, class: ModelClass) -> FunctionSpec {
    FunctionSpec {
        name: name.into(),
        bytes: pages * PAGE,
        exec_ms,
        class,
        deadline_ms: 100.0,
        percentile: 0.98,
        max_batch: 1,
    }
}

/// `n` devices of `pages` pages; host links of 1 GB/s per device, pairs (0, 1), (2, 3)...
/// sharing one; peer links `peer(i, j)`.
fn cluster(policy: PolicyKind, n: usize, pages: u64, peer: impl Fn(usize, usize) -> Option<f64>) -> Cluster {
    seeded(policy, 1, n, pages, peer)
}

fn seeded(policy: PolicyKind, seed: u64, n: usize, pages: u64, peer: impl Fn(usize, usize) -> Option<f64>) -> Cluster {
    let devices = (0..n)
        .map(|i| DeviceSpec {
            pool: PagePool::new(pages * PAGE, PAGE),
            host_link: Some(1e9),
            peers: (0..n).map(|j| if i == j { None } else { peer(i, j) }).collect(),
            host_group: i / 2,
        })
        .collect();
    Cluster::new(ClusterConfig { policy, seed, ..ClusterConfig::default() }, devices)
}

#[track_caller]
fn run(c: &mut Cluster, now: f64) -> Dispatch {
    match c.next_dispatch(now) {
        Some(Decision::Run(d)) => d,
        other => panic!("expected a dispatch, got {other:?}"),
    }
}

#[track_caller]
fn queue(c: &mut Cluster, r: RequestId, f: FunctionId, now: f64) {
    assert_eq!(c.enqueue(r, f, now, None), Admission::Queued);
}

#[test]
fn a_copy_on_a_failed_device_is_dropped_once_its_last_reader_is_done() {
    let mut c = cluster(PolicyKind::Torpor, 3, 4, |_, _| Some(1e12));
    c.add_function(1, spec("a", 2, 1.0, ModelClass::Light)).unwrap();
    c.add_function(2, spec("b", 2, 1.0, ModelClass::Light)).unwrap();
    queue(&mut c, 1, 1, 0.0);
    let first = run(&mut c, 0.0);
    c.complete(first.device);
    let holder = first.device;
    // b runs on the device that holds a, then a is needed again: a peer copy from there.
    queue(&mut c, 2, 2, 1.0);
    let b_job = run(&mut c, 1.0);
    assert_eq!(b_job.device, holder, "b is placed beside a (the test needs that)");
    queue(&mut c, 3, 1, 2.0);
    let reader = run(&mut c, 2.0);
    assert_eq!(reader.swap, Some(SwapSource::Peer(holder)));
    // b's job fails there: the device is unhealthy; a's copy is being read, so it stays...
    c.fail(holder);
    assert!(c.set_health(holder, false).is_empty(), "a is pinned by the reader");
    // ...until the reader is done, and then it goes: a failed device is no copy source.
    c.complete(reader.device);
    assert_eq!(c.residency(1), vec![reader.device]);
    c.check_accounting().unwrap();
}

#[test]
fn an_unhealthy_device_gets_no_work_and_loses_its_copies_until_it_is_healthy() {
    for policy in [PolicyKind::SimpleSwap, PolicyKind::Torpor, PolicyKind::Faaswap] {
        let mut c = cluster(policy, 2, 4, |_, _| Some(1e12));
        c.add_function(1, spec("a", 2, 1.0, ModelClass::Light)).unwrap();
        c.add_function(2, spec("b", 2, 1.0, ModelClass::Light)).unwrap();
        queue(&mut c, 1, 1, 0.0);
        let d = run(&mut c, 0.0);
        c.complete(d.device);
        let (sick, well) = (d.device, 1 - d.device);
        assert_eq!(c.set_health(sick, false), vec![1], "{policy}: its copy is dropped");
        assert!(c.residency(1).is_empty() && c.memory(sick).0 == 0, "{policy}");
        c.check_accounting().unwrap();
        for r in 2..6 {
            queue(&mut c, r, 1 + r % 2, r as f64);
            let d = run(&mut c, r as f64);
            assert_eq!(d.device, well, "{policy}: request {r} avoids the unhealthy device");
            assert_ne!(d.swap, Some(SwapSource::Peer(sick)), "{policy}: never a copy source");
            c.complete(d.device);
        }
        // Only the unhealthy device would be idle: nothing starts.
        queue(&mut c, 9, 1, 10.0);
        let d = run(&mut c, 10.0);
        queue(&mut c, 10, 2, 10.0);
        assert_eq!(c.next_dispatch(10.0), None, "{policy}");
        c.complete(d.device);
        assert!(c.set_health(sick, true).is_empty());
        assert!(c.healthy(sick));
        let d = run(&mut c, 11.0);
        assert_eq!(d.requests, vec![10], "{policy}");
        c.complete(d.device);
        c.check_accounting().unwrap();
    }
}

#[test]
fn refuses_functions_that_fit_no_device() {
    let mut c = cluster(PolicyKind::Faaswap, 2, 4, |_, _| None);
    assert!(c.add_function(1, spec("a", 4, 1.0, ModelClass::Light)).is_ok());
    assert!(c.add_function(2, spec("b", 5, 1.0, ModelClass::Light)).is_err());
    assert_eq!(c.enqueue(1, 9, 0.0, None), Admission::Unknown);
}

#[test]
fn simpleswap_is_fifo_with_lru_eviction_and_seeded_random_devices() {
    let mut c = cluster(PolicyKind::SimpleSwap, 1, 4, |_, _| None);
    for f in 1..=3 {
        c.add_function(f, spec(&format!("f{f}"), 2, 1.0, ModelClass::Light)).unwrap();
    }
    for (r, f) in [(1, 1), (2, 2), (3, 1)] {
        queue(&mut c, r, f, r as f64);
        let d = run(&mut c, r as f64);
        assert_eq!(d.requests, vec![r], "FIFO");
        c.complete(0);
    }
    // f2 was used less recently than f1: it goes.
    queue(&mut c, 4, 3, 4.0);
    let d = run(&mut c, 4.0);
    assert_eq!(d.evicted, vec![(2, EvictReason::Lru)]);
    assert_eq!(d.swap, Some(SwapSource::Host));
    // Random among idle devices, but the same for the same seed.
    let picks = |seed: u64| {
        let mut c = seeded(PolicyKind::SimpleSwap, seed, 4, 8, |_, _| Some(1e12));
        c.add_function(1, spec("a", 1, 1.0, ModelClass::Light)).unwrap();
        (0..8)
            .map(|r| {
                queue(&mut c, r, 1, 0.0);
                let d = run(&mut c, 0.0);
                assert_eq!(d.swap.is_some(), !c.s.ready_on(d.device, 1), "simpleswap never copies from a peer");
                c.complete(d.device);
                d.device
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(picks(5), picks(5));
    assert!(picks(5).iter().any(|&d| d != picks(5)[0]), "not always the same device");
}

#[test]
fn the_executing_model_and_copy_sources_are_never_evicted() {
    let mut c = cluster(PolicyKind::Faaswap, 2, 4, |_, _| Some(1e12));
    c.s.devices[1].group = 1; // own host links: no copy slows the other's
    c.add_function(1, spec("a", 2, 1.0, ModelClass::Light)).unwrap();
    c.add_function(2, spec("b", 2, 1.0, ModelClass::Light)).unwrap();
    c.add_function(3, spec("c", 4, 1.0, ModelClass::Light)).unwrap();
    queue(&mut c, 1, 1, 0.0);
    let x = run(&mut c, 0.0).device;
    queue(&mut c, 2, 2, 0.0);
    let y = run(&mut c, 0.0).device;
    assert_ne!(x, y, "the second model goes to the idle device");
    queue(&mut c, 3, 3, 0.0);
    assert_eq!(c.next_dispatch(0.0), None, "both busy: wait, evict nothing");
    c.remove_function(3);
    c.complete(x);
    c.complete(y);
    queue(&mut c, 3, 1, 1.0);
    assert_eq!(
        run(&mut c, 1.0),
        Dispatch {
            requests: vec![3],
            function: 1,
            device: x,
            extent: Extent { first: 0, pages: 2 },
            swap: None,
            evicted: vec![],
            predicted_ms: 1.0
        }
    );
    // Device x is busy: a copy from it over the fast peer link beats waiting.
    queue(&mut c, 4, 1, 1.0);
    let d = run(&mut c, 1.0);
    assert_eq!((d.device, d.swap), (y, Some(SwapSource::Peer(x))));
    c.complete(x);
    // While y copies from it, x's copy of `a` cannot go, so `c` fits nowhere now.
    c.add_function(3, spec("c", 4, 1.0, ModelClass::Light)).unwrap();
    queue(&mut c, 5, 3, 2.0);
    assert_eq!(c.next_dispatch(2.0), None);
    c.complete(y);
    let d = run(&mut c, 3.0);
    assert!(!d.evicted.is_empty());
    let used: u64 = (0..2).map(|i| c.snapshot(i).used_bytes).sum();
    let resident: u64 = (1..=3).map(|f| c.residency(f).len() as u64 * c.s.functions[&f].spec.bytes).sum();
    assert_eq!(used, resident, "pages accounted exactly");
}

#[test]
fn an_incomplete_or_failed_copy_is_never_reused() {
    let mut c = cluster(PolicyKind::Torpor, 3, 2, |_, _| Some(48e9));
    c.add_function(1, spec("a", 1, 1.0, ModelClass::Light)).unwrap();
    queue(&mut c, 1, 1, 0.0);
    assert_eq!(run(&mut c, 0.0).swap, Some(SwapSource::Host));
    c.policy = Policy::new(PolicyKind::SimpleSwap, 1); // torpor allows one request in flight per function
    queue(&mut c, 2, 1, 0.0);
    let second = run(&mut c, 0.0);
    assert_eq!(second.swap, Some(SwapSource::Host), "device 0's copy is not complete yet");
    assert!(c.fail(0), "the failed job's copy is dropped");
    assert_eq!(c.residency(1), vec![second.device], "a failed copy is dropped");
}

#[test]
fn torpor_placement_order() {
    // Fast peer links 0–3 and 2–3, slow 0–1; PCIe pairs (0, 1) and (2, 3).
    let links = |i: usize, j: usize| match (i.min(j), i.max(j)) {
        (0, 3) | (2, 3) => Some(48e9),
        (0, 1) => Some(24e9),
        _ => None,
    };
    let mut c = cluster(PolicyKind::Torpor, 4, 8, links);
    for f in 1..=4 {
        c.add_function(f, spec(&format!("f{f}"), 1, 1.0, ModelClass::Heavy)).unwrap();
    }
    // A host copy to the first idle device whose PCIe neighbour is not copying.
    queue(&mut c, 1, 1, 0.0);
    assert_eq!(run(&mut c, 0.0).device, 0);
    c.complete(0);
    // (1) an idle device that holds the model, no copy.
    queue(&mut c, 2, 1, 1.0);
    assert_eq!(run(&mut c, 1.0).swap, None);
    queue(&mut c, 3, 1, 1.0);
    assert_eq!(c.next_dispatch(1.0), None, "one request in flight per function");
    c.complete(0);
    // Device 0 takes f2 (copying from the host until about 2.001) and runs it...
    queue(&mut c, 4, 2, 2.0);
    c.enqueue(5, 3, 2.0, None);
    let d = run(&mut c, 2.0);
    assert_eq!(d.requests, vec![3], "FIFO within the low group");
    c.complete(0);
    let d = run(&mut c, 2.0);
    assert_eq!((d.requests[0], d.device, d.swap), (4, 0, Some(SwapSource::Host)));
    // (2) ... so f1 is copied to the idle device with the fastest peer link from device 0.
    queue(&mut c, 6, 1, 2.0);
    let d = run(&mut c, 2.0);
    assert_eq!(d.requests, vec![5], "f3 was queued first");
    assert_eq!((d.device, d.swap), (2, Some(SwapSource::Host)), "(3) device 1's neighbour 0 is copying");
    let d = run(&mut c, 2.0);
    assert_eq!((d.device, d.swap), (3, Some(SwapSource::Peer(0))));
    // (4/5) only device 1 is idle, its neighbour still copying: it loads anyway.
    queue(&mut c, 7, 4, 2.0);
    let d = run(&mut c, 2.0);
    assert_eq!((d.device, d.swap), (1, Some(SwapSource::Host)));
}

#[test]
fn torpor_evicts_replicas_then_light_then_medium_then_heavy() {
    let mut c = cluster(PolicyKind::Torpor, 1, 4, |_, _| None);
    let classes = [ModelClass::Heavy, ModelClass::Medium, ModelClass::Light, ModelClass::Light];
    for (k, class) in classes.into_iter().enumerate() {
        c.add_function(k as u64 + 1, spec(&format!("f{k}"), 1, 1.0, class)).unwrap();
        queue(&mut c, k as u64, k as u64 + 1, k as f64);
        run(&mut c, k as f64);
        c.complete(0);
    }
    let mut order = Vec::new();
    for n in 0..3u64 {
        c.add_function(10 + n, spec("new", 1, 1.0, ModelClass::Heavy)).unwrap();
        queue(&mut c, 100 + n, 10 + n, 10.0 + n as f64);
        let d = run(&mut c, 10.0 + n as f64);
        order.extend(d.evicted.iter().map(|e| e.0));
        c.complete(0);
    }
    // Light f3 (older) before light f4, then the medium f2; the heavy f1 is next.
    assert_eq!(order, vec![3, 4, 2]);
    assert_eq!(c.residency(1), vec![0]);
}

#[test]
fn torpor_serves_the_high_priority_group_first() {
    let mut c = cluster(PolicyKind::Torpor, 1, 8, |_, _| None);
    c.add_function(1, spec("ok", 1, 1.0, ModelClass::Light)).unwrap();
    c.add_function(2, spec("late", 1, 1.0, ModelClass::Light)).unwrap();
    for _ in 0..50 {
        c.record(1, 10.0);
        c.record(2, 500.0);
    }
    c.next_dispatch(0.0); // the first update computes the groups
    assert_eq!(c.torpor_groups().1, 1, "only the late function needs requests: the high group");
    queue(&mut c, 1, 1, 1.0);
    queue(&mut c, 2, 2, 2.0);
    assert_eq!(run(&mut c, 2.5).requests, vec![2], "the high group first, though it arrived later");
}

#[test]
fn faaswap_waits_for_the_holder_when_a_swap_would_be_slower() {
    // Host link 1 GB/s: a 100-page model takes ~105 ms to copy; it runs 10 ms.
    let mut c = cluster(PolicyKind::Faaswap, 2, 200, |_, _| None);
    c.add_function(1, spec("big", 100, 10.0, ModelClass::Heavy)).unwrap();
    queue(&mut c, 1, 1, 0.0);
    let d = run(&mut c, 0.0);
    c.complete(d.device);
    queue(&mut c, 2, 1, 200.0);
    let d = run(&mut c, 200.0);
    assert_eq!(d.swap, None);
    queue(&mut c, 3, 1, 201.0);
    assert_eq!(c.next_dispatch(201.0), None, "waiting 9 ms for the holder beats a 105 ms copy");
    c.complete(d.device);
    assert_eq!(run(&mut c, 210.0).swap, None);
}

#[test]
fn faaswap_batches_orders_by_deadline_and_sheds() {
    let mut c = cluster(PolicyKind::Faaswap, 1, 8, |_, _| None);
    c.add_function(1, FunctionSpec { max_batch: 3, ..spec("a", 1, 10.0, ModelClass::Light) }).unwrap();
    c.add_function(2, FunctionSpec { deadline_ms: 20.0, ..spec("b", 1, 10.0, ModelClass::Light) }).unwrap();
    queue(&mut c, 0, 2, 0.0);
    run(&mut c, 0.0);
    c.complete(0);
    queue(&mut c, 1, 1, 0.0); // deadline 100
    let first = run(&mut c, 0.0);
    for r in 2..=5 {
        queue(&mut c, r, 1, 1.0);
    }
    queue(&mut c, 6, 2, 2.0); // deadline 22: runs first
    c.complete(first.device);
    assert_eq!(run(&mut c, 3.0).requests, vec![6], "earliest deadline first");
    c.complete(0);
    let d = run(&mut c, 15.0);
    assert_eq!(d.requests, vec![2, 3, 4], "a batch of up to max_batch of one function");
    assert!((d.predicted_ms - estimate::batched_exec_ms(10.0, 3)).abs() < 1e-9);
    c.complete(0);
    assert_eq!(run(&mut c, 30.0).requests, vec![5]);
    // Shedding: a request that cannot finish before its deadline anywhere is dropped.
    c.s.cfg.shed = true;
    c.complete(0);
    assert_eq!(c.enqueue(7, 2, 40.0, Some(5.0)), Admission::Queued);
    match c.next_dispatch(41.0) {
        Some(Decision::Drop { requests, reason: DropReason::Unmeetable, .. }) => assert_eq!(requests, vec![7]),
        other => panic!("expected a drop, got {other:?}"),
    }
}

#[test]
fn a_clients_shorter_deadline_never_spends_the_functions_miss_budget() {
    let mut c = cluster(PolicyKind::Faaswap, 1, 8, |_, _| None);
    c.s.cfg.shed = true;
    c.add_function(1, spec("f", 1, 10.0, ModelClass::Light)).unwrap();
    c.add_function(2, spec("slower than its deadline", 1, 500.0, ModelClass::Light)).unwrap();
    // A client asking for a millionth of a millisecond, 300 times: each is shed, none is the
    // function's miss.
    for r in 0..300 {
        assert_eq!(c.enqueue(r, 1, r as f64, Some(1e-6)), Admission::Queued);
        assert!(matches!(c.next_dispatch(r as f64), Some(Decision::Drop { reason: DropReason::Unmeetable, .. })));
    }
    assert_eq!(c.s.functions[&1].stats.counts(), (0, 0));
    assert!(!lost(&c, 1));
    // A request with the function's own deadline that cannot make it is shed too, and that
    // one is the function's miss.
    queue(&mut c, 300, 2, 300.0);
    assert!(matches!(c.next_dispatch(300.0), Some(Decision::Drop { .. })));
    assert_eq!(c.s.functions[&2].stats.counts(), (1, 0));
}

#[test]
fn shedding_is_never_permanent_for_a_function() {
    let mut c = cluster(PolicyKind::Faaswap, 1, 8, |_, _| None);
    c.s.cfg.shed = true;
    c.add_function(1, spec("f", 1, 10.0, ModelClass::Light)).unwrap();
    // Out of its miss budget, it is not copied in from the host while shedding...
    for _ in 0..300 {
        c.record(1, f64::INFINITY);
    }
    assert!(lost(&c, 1));
    // One request a second: its SLO window (250 requests) spans about 250 s. Refused until
    // then; once all its requests have been refused for longer than that, the next one runs
    // (and its window starts afresh: it is judged by what it does from now on).
    let mut r = 0;
    let d = loop {
        let now = r as f64 * 1000.0;
        queue(&mut c, r, 1, now);
        match c.next_dispatch(now) {
            Some(Decision::Drop { .. }) => r += 1,
            Some(Decision::Run(d)) => break d,
            None => panic!("nothing decided at {now}"),
        }
    };
    assert!((250..300).contains(&r), "refused for {r} s");
    assert_eq!((d.requests, d.swap), (vec![r], Some(SwapSource::Host)));
    assert!(!lost(&c, 1));
    c.complete(0);
    c.record(1, 20.0);
    assert_eq!(c.s.functions[&1].stats.counts(), (1, 1));
    // On probation: its next miss spends its budget again.
    c.record(1, f64::INFINITY);
    assert!(lost(&c, 1));
}

#[test]
fn host_copies_on_one_link_share_it_and_slow_each_other() {
    // Devices 0 and 1 share a 1 GB/s host link; 1 MiB pages.
    let mut c = cluster(PolicyKind::Faaswap, 2, 200, |_, _| None);
    let loose = |name, pages| FunctionSpec { deadline_ms: 1000.0, ..spec(name, pages, 1.0, ModelClass::Light) };
    c.add_function(1, loose("a", 100)).unwrap();
    c.add_function(2, loose("b", 20)).unwrap();
    let ms = |pages: u64| estimate::transfer_ms(pages * PAGE, 1e9);
    let chunk = estimate::transfer_ms(FIRST_CHUNK_BYTES, 1e9);
    queue(&mut c, 1, 1, 0.0);
    let a = run(&mut c, 0.0);
    assert!((a.predicted_ms - (ms(100) + chunk)).abs() < 1e-6, "alone on the link: {}", a.predicted_ms);
    queue(&mut c, 2, 2, 0.0);
    let b = run(&mut c, 0.0);
    assert_eq!((b.device, b.swap), (1, Some(SwapSource::Host)));
    // Processor sharing: b's 20 pages and as much of a's go at the link's rate together.
    assert!((b.predicted_ms - (2.0 * ms(20) + chunk)).abs() < 1e-6, "shared: {}", b.predicted_ms);
    let a_now = c.s.devices[0].job.as_ref().unwrap();
    assert!((a_now.host_copy_until.unwrap() - (ms(100) + ms(20))).abs() < 1e-6, "a is delayed by b's bytes");
    assert!((a_now.ends_at - (ms(100) + ms(20))).abs() < 1e-6);
}

#[test]
fn faaswap_keeps_a_copy_off_a_link_where_it_would_make_another_job_late() {
    for (a_deadline, waits) in [(120.0, true), (1000.0, false)] {
        let mut c = cluster(PolicyKind::Faaswap, 2, 200, |_, _| None);
        c.add_function(1, FunctionSpec { deadline_ms: a_deadline, ..spec("a", 100, 1.0, ModelClass::Heavy) }).unwrap();
        c.add_function(2, FunctionSpec { deadline_ms: 1000.0, ..spec("b", 20, 10.0, ModelClass::Light) }).unwrap();
        queue(&mut c, 1, 1, 0.0);
        assert_eq!(run(&mut c, 0.0).device, 0); // ~107 ms: within 120 alone, not with b beside it
        queue(&mut c, 2, 2, 1.0);
        match c.next_dispatch(1.0) {
            None => assert!(waits, "b waits for device 0 although device 1 is idle"),
            Some(Decision::Run(d)) => {
                assert!(!waits, "b ran on device {} and made a late", d.device);
                assert_eq!(d.device, 1);
            }
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn faaswap_evicts_to_meet_a_deadline_when_waiting_would_miss_it() {
    // Device 0 is full with `v`, which reloads too slowly for its own 10 ms deadline (each
    // eviction of it costs a likely miss later); device 1 has room but runs a 500 ms job.
    let mut c = cluster(PolicyKind::Faaswap, 2, 10, |_, _| None);
    c.add_function(1, FunctionSpec { deadline_ms: 10.0, ..spec("v", 10, 1.0, ModelClass::Light) }).unwrap();
    c.add_function(2, FunctionSpec { deadline_ms: 1000.0, ..spec("w", 2, 500.0, ModelClass::Light) }).unwrap();
    c.add_function(3, spec("f", 5, 1.0, ModelClass::Light)).unwrap();
    queue(&mut c, 1, 1, 0.0);
    assert_eq!(run(&mut c, 0.0).device, 0);
    c.complete(0);
    // Established (loaded two minutes ago) and asked for about once every ten seconds.
    let t = 121_000.0;
    for k in 0..6u64 {
        queue(&mut c, 10 + k, 1, t + k as f64);
        assert_eq!(run(&mut c, t + k as f64).swap, None);
        c.complete(0);
    }
    queue(&mut c, 20, 2, t + 10.0);
    assert_eq!(run(&mut c, t + 10.0).device, 1);
    // Waiting ~500 ms for device 1 misses f's 100 ms deadline for sure; evicting v risks
    // about one of v's later requests: f evicts v.
    queue(&mut c, 21, 3, t + 20.0);
    let d = run(&mut c, t + 20.0);
    assert_eq!((d.device, d.evicted.iter().map(|e| e.0).collect::<Vec<_>>()), (0, vec![1]));
}

#[test]
fn faaswap_serves_strictly_by_deadline_even_past_resident_models() {
    let mut c = cluster(PolicyKind::Faaswap, 1, 20, |_, _| None);
    c.add_function(1, spec("resident", 1, 5.0, ModelClass::Light)).unwrap();
    c.add_function(2, FunctionSpec { deadline_ms: 20.0, ..spec("cold", 5, 1.0, ModelClass::Light) }).unwrap();
    queue(&mut c, 1, 1, 0.0);
    run(&mut c, 0.0);
    c.complete(0);
    queue(&mut c, 2, 1, 1.0); // deadline 101, resident
    queue(&mut c, 3, 2, 2.0); // deadline 22, needs a copy
    let d = run(&mut c, 2.0);
    assert_eq!((d.requests, d.swap), (vec![3], Some(SwapSource::Host)), "the earlier deadline first");
}

#[test]
fn faaswap_evicts_by_reload_cost_and_keeps_one_replica_when_memory_is_tight() {
    // One 40-page device: a heavy model (copy ≫ run) and light ones (copy hides under the run).
    let mut c = cluster(PolicyKind::Faaswap, 1, 40, |_, _| None);
    let heavy = FunctionSpec { deadline_ms: 60.0, ..spec("heavy", 30, 5.0, ModelClass::Heavy) };
    c.add_function(1, heavy).unwrap();
    c.add_function(2, spec("light-a", 5, 50.0, ModelClass::Light)).unwrap();
    c.add_function(3, spec("light-b", 5, 50.0, ModelClass::Light)).unwrap();
    c.add_function(4, spec("light-c", 5, 50.0, ModelClass::Light)).unwrap();
    let mut t = 0.0;
    for (r, f) in [(1, 1), (2, 2), (3, 3), (4, 1), (5, 2), (6, 3)] {
        queue(&mut c, r, f, t);
        run(&mut c, t);
        c.complete(0);
        t += 100.0;
    }
    queue(&mut c, 7, 4, t);
    let d = run(&mut c, t);
    assert_eq!(d.evicted.len(), 1);
    assert_ne!(d.evicted[0].0, 1, "the heavy model's reload would miss its deadline: a light one goes");
    assert_eq!(d.evicted[0].1, EvictReason::ReloadCost);
    // Two devices, the second full: no second copy of a model is made by evicting.
    let mut c = cluster(PolicyKind::Faaswap, 2, 10, |_, _| Some(1e12));
    c.add_function(1, spec("a", 10, 10.0, ModelClass::Light)).unwrap();
    c.add_function(2, spec("b", 10, 10.0, ModelClass::Light)).unwrap();
    for (r, f) in [(1, 1), (2, 2)] {
        queue(&mut c, r, f, 0.0);
        run(&mut c, 0.0);
    }
    c.complete(0);
    c.complete(1);
    let holder = c.residency(1)[0];
    queue(&mut c, 3, 1, 1.0);
    run(&mut c, 1.0);
    queue(&mut c, 4, 1, 1.0);
    assert_eq!(c.next_dispatch(1.0), None, "the other device would have to evict b for a replica of a");
    c.complete(holder);
}

#[test]
fn native_binds_at_deploy_and_never_swaps_out() {
    let mut c = cluster(PolicyKind::Native, 2, 4, |_, _| None);
    for f in 1..=5 {
        c.add_function(f, spec(&format!("f{f}"), 2, 1.0, ModelClass::Light)).unwrap();
    }
    // Four fit (two per device), the fifth has no home.
    assert_eq!(c.enqueue(1, 5, 0.0, None), Admission::Rejected(DropReason::NotPlaced));
    queue(&mut c, 2, 1, 0.0);
    let d = run(&mut c, 0.0);
    assert_eq!(d.swap, Some(SwapSource::Host), "the first request loads it");
    assert!(d.evicted.is_empty());
    c.complete(d.device);
    queue(&mut c, 3, 1, 1.0);
    assert_eq!(run(&mut c, 1.0).swap, None);
    queue(&mut c, 4, 1, 1.0);
    assert_eq!(c.next_dispatch(1.0), None, "only its own device, busy");
    assert_eq!(c.snapshot(0).used_bytes + c.snapshot(1).used_bytes, 8 * PAGE);
}

#[test]
fn removing_a_function_frees_its_pages_and_drops_its_queue() {
    let mut c = cluster(PolicyKind::Faaswap, 1, 4, |_, _| None);
    c.add_function(1, spec("a", 3, 1.0, ModelClass::Light)).unwrap();
    queue(&mut c, 1, 1, 0.0);
    run(&mut c, 0.0);
    queue(&mut c, 2, 1, 0.0);
    assert_eq!(c.remove_function(1), (vec![2], vec![]));
    assert_eq!(c.snapshot(0).used_bytes, 3 * PAGE, "still executing: freed on completion");
    c.complete(0);
    assert_eq!(c.snapshot(0).used_bytes, 0);
    assert_eq!(c.enqueue(3, 1, 1.0, None), Admission::Unknown);
}

#[test]
fn the_drain_estimate_counts_the_work_ahead_of_a_full_queue() {
    let mut c = cluster(PolicyKind::Faaswap, 2, 8, |_, _| None);
    c.add_function(1, FunctionSpec { max_batch: 4, ..spec("fast", 1, 10.0, ModelClass::Light) }).unwrap();
    c.add_function(2, spec("slow", 4, 400.0, ModelClass::Light)).unwrap();
    // Both devices busy with slow jobs for 400 ms.
    for r in 0..2 {
        queue(&mut c, r, 2, 0.0);
        run(&mut c, 0.0);
    }
    for r in 2..6 {
        queue(&mut c, r, 2, 0.0);
    }
    for r in 6..14 {
        queue(&mut c, r, 1, 0.0);
    }
    // Ahead of "fast": 2 × 400 ms running, 4 slow requests (4 MB copies at 1 GB/s: 4 ms
    // once), 8 fast ones in 2 batches of 4 (1 MB copy): over 2 devices.
    let fast = 2.0 * estimate::batched_exec_ms(10.0, 4) + 1.0;
    let want = (800.0 + 4.0 * 400.0 + 4.0 + fast) / 2.0;
    let got = c.drain_estimate_ms(1, 0.0);
    assert!((got - want).abs() < 5.0, "{got} vs {want} (copies of MiB pages and first chunks aside)");
    // The fast function's own 8 requests alone would take 2 batches; the slow queue ahead
    // is what it waits for. Later, less is left of the running jobs.
    assert!(got > 1000.0 && c.drain_estimate_ms(1, 300.0) < got);
}

#[test]
fn queues_are_bounded_and_deadlines_only_shorten() {
    let mut c = cluster(PolicyKind::Faaswap, 1, 8, |_, _| None);
    c.s.cfg.max_queue_per_function = 2;
    c.s.cfg.max_queue = 3;
    c.add_function(1, spec("a", 1, 10.0, ModelClass::Light)).unwrap();
    c.add_function(2, spec("b", 1, 10.0, ModelClass::Light)).unwrap();
    queue(&mut c, 1, 1, 0.0);
    queue(&mut c, 2, 1, 0.0);
    assert_eq!(c.enqueue(3, 1, 0.0, None), Admission::Rejected(DropReason::Overloaded), "a's queue is full");
    queue(&mut c, 4, 2, 0.0);
    assert_eq!(c.enqueue(5, 2, 0.0, None), Admission::Rejected(DropReason::Overloaded), "the whole queue is full");
    assert_eq!((c.queued(1), c.queued(2), c.queue_len()), (2, 1, 3));
    assert!(c.drain_estimate_ms(1, 0.0) >= 20.0);
    run(&mut c, 0.0);
    assert_eq!(c.queue_len(), 2, "the dispatch frees a place");
    // A request's own deadline may be shorter than the SLO (100 ms), never longer.
    c.complete(0);
    (c.s.cfg.max_queue_per_function, c.s.cfg.max_queue) = (10, 10);
    assert_eq!(c.enqueue(6, 2, 50.0, Some(1e9)), Admission::Queued);
    assert_eq!(c.s.queue.last().map(|q| q.deadline), Some(150.0));
    assert_eq!(c.enqueue(7, 2, 50.0, Some(4.0)), Admission::Queued);
    assert_eq!(c.s.queue.last().map(|q| (q.deadline, q.window)), Some((54.0, 4.0)));
}
