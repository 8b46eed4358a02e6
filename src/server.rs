//! Process start-up and shutdown: one pinned glommio executor per shard, each opening its
//! partitions, joining the mesh and listening on the shared port; SIGINT/SIGTERM stop them after
//! every partition flushed what it accepted.

use crate::broker::Broker;
use crate::config::Config;
use crate::metadata::ClusterMeta;
use crate::shard::mesh::Mesh;
use crate::shard::Shard;
use glommio::{LocalExecutorBuilder, Placement};
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How often a shard checks for the stop signal.
const STOP_POLL_MS: u64 = 50;
/// How long a listener found on our port may take to go away (a killed broker's).
const PORT_WAIT_MS: u64 = 5000;
/// How long the other shards wait for shard 0's controlled shutdown before closing anyway.
const RELEASE_WAIT: Duration = Duration::from_secs(8);
/// Set by shard 0 once a stopping cluster node has released its leaderships (one broker per
/// process, so process-wide is exact).
static LEADERSHIP_RELEASED: AtomicBool = AtomicBool::new(false);
/// io_uring buffer memory each executor registers (glommio locks it in RAM).
const IO_MEMORY_BYTES: usize = 8 << 20;

/// Keeps memory the broker frees for its own reuse instead of handing it back to the kernel.
///
/// The tail cache and the write buffers free and allocate the same sizes all the time (a batch
/// of hundreds of KiB, a write buffer of MiBs). glibc serves allocations over its mmap threshold
/// (128 KiB at first) with fresh mappings and trims the heap's top, so every such allocation was
/// memory the kernel had to fault in and zero again: with a cache of gigabytes filling, 57% of
/// the broker's CPU was `clear_page_erms` (perf, produce 1 KiB on 8 partitions), and on a VM
/// with free page reporting the host faults each page in too. Above 32 MiB (glibc's largest
/// threshold) allocations are still mappings; nothing the broker allocates per request is.
fn keep_freed_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only sets glibc's tunables; called before the shards start allocating.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
    }
}

/// The CPUs this process may run on (its affinity mask), at least one.
pub fn usable_cores() -> Vec<usize> {
    core_affinity::get_core_ids()
        .map(|ids| ids.into_iter().map(|c| c.id).collect())
        .filter(|v: &Vec<usize>| !v.is_empty())
        .unwrap_or_else(|| vec![0])
}

pub fn run(mut config: Config) -> anyhow::Result<()> {
    config.validate()?;
    abort_on_panic();
    let cores = usable_cores();
    let nr = config.shard_count(cores.len());
    let tail_cache = config.resolve_tail_cache(nr, crate::config::memory_bytes());
    let listeners = crate::security::listeners(&config)?;
    crate::security::install_plain_users(crate::security::load_plain_users(&config)?);
    crate::security::install_inter_broker_login(&config, &listeners);
    let mut _locks = Vec::new();
    for dir in config.log_dirs() {
        std::fs::create_dir_all(&dir)
            .map_err(|e| anyhow::anyhow!("data dir {}: {e}", dir.display()))?;
        _locks.push(lock_data_dir(&dir)?);
    }
    for l in &listeners {
        ensure_port_free(l.addr)?;
    }
    raise_memlock();
    raise_nofile();
    keep_freed_memory();

    // A cluster node starts from the metadata its quorum log had committed; a single node
    // from its metadata file.
    let (meta, mut recovered) = if config.is_cluster() {
        let rec = crate::cluster::node::recover(&config)?;
        // Until this process's own registration is in its image, its recorded leaderships
        // are stale (others may lead since): it leads nothing.
        let meta = rec
            .applied
            .state
            .image_for(config.node_id, -1, nr)
            .without_own_leadership();
        (meta, Some(rec))
    } else {
        let meta = ClusterMeta::load(&config.meta_dir(), nr)?;
        meta.save(&config.meta_dir())?;
        (meta, None)
    };
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(sig, stop.clone())?;
    }
    let shown: Vec<String> = listeners
        .iter()
        .map(|l| {
            format!(
                "{}://{} (advertised {}:{})",
                l.name, l.addr, l.advertised.0, l.advertised.1
            )
        })
        .collect();
    tracing::info!(
        listeners = ?shown,
        shards = nr,
        tail_cache_mib_per_shard = tail_cache >> 20,
        data_dirs = ?config.log_dirs(),
        flush = ?config.flush_policy(),
        "starting flumen {}",
        env!("CARGO_PKG_VERSION")
    );
    let registry = match &config.metrics_listen {
        Some(addr) => {
            let registry = crate::metrics::Registry::new(nr);
            let at = crate::metrics::serve(addr, registry.clone())?;
            tracing::info!("metrics on http://{at}/metrics");
            Some(registry)
        }
        None => None,
    };
    let mesh = Mesh::builder(nr);
    let mut handles = Vec::with_capacity(nr);
    for id in 0..nr {
        let cpu = cores[id % cores.len()];
        let config = config.clone();
        let meta = meta.clone();
        let mesh = mesh.clone();
        let stop = stop.clone();
        let registry = registry.clone();
        let quorum = if id == 0 { recovered.take() } else { None };
        let h = LocalExecutorBuilder::new(Placement::Fixed(cpu))
            .name(&format!("flumen-shard-{id}"))
            .io_memory(IO_MEMORY_BYTES)
            .spawn(move || async move {
                let r = shard_main(
                    (id, nr, cpu),
                    config,
                    (meta, quorum),
                    mesh,
                    stop.clone(),
                    registry,
                )
                .await;
                if let Err(e) = &r {
                    tracing::error!(shard = id, "shard failed: {e:#}");
                    stop.store(true, Ordering::Relaxed);
                }
                r
            })
            .map_err(|e| anyhow::anyhow!("starting shard {id}: {e}"))?;
        handles.push(h);
    }
    let mut first_err = None;
    for h in handles {
        match h.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                first_err.get_or_insert(e);
            }
            Err(e) => {
                first_err.get_or_insert(anyhow::anyhow!("shard thread: {e}"));
            }
        }
    }
    match first_err {
        Some(e) => Err(e),
        None => {
            tracing::info!("stopped cleanly");
            Ok(())
        }
    }
}

/// Runs shard `id` of `nr` on `cpu` until the broker stops.
async fn shard_main(
    (id, nr, cpu): (usize, usize, usize),
    config: Config,
    (meta, quorum): (ClusterMeta, Option<crate::cluster::node::Recovered>),
    mesh: glommio::channels::channel_mesh::MeshBuilder<
        crate::shard::mesh::Msg,
        glommio::channels::channel_mesh::Full,
    >,
    stop: Arc<AtomicBool>,
    registry: Option<Arc<crate::metrics::Registry>>,
) -> anyhow::Result<()> {
    let listeners = crate::security::listeners(&config)?;
    let broker = Broker::new(Shard::new(id, nr), Rc::new(config), meta);
    broker.open().await?;
    broker.shard.set_mesh(Mesh::join(mesh).await?);
    let node = match quorum {
        Some(rec) => Some(start_cluster_node(&broker, rec, nr, &stop).await?),
        None => None,
    };
    broker.start(stop.clone()).await?;
    for l in listeners {
        let addr = l.addr;
        let sock = glommio::net::TcpListener::bind(addr)
            .map_err(|e| anyhow::anyhow!("listen {} ({addr}): {e}", l.name))?;
        tracing::info!(
            shard = id,
            cpu,
            partitions = broker.partitions.local_count(),
            listener = %l.name,
            "shard listening on {addr}"
        );
        let tls = match &l.tls {
            Some(files) => Some(Rc::new(crate::security::tls::Acceptor::new(files.clone())?)),
            None => None,
        };
        glommio::spawn_local(accept_loop(broker.clone(), sock, Rc::new(l), tls)).detach();
    }
    if let Some(r) = registry {
        broker.spawn_metrics(r, stop.clone());
    }
    while !stop.load(Ordering::Relaxed) {
        glommio::timer::sleep(Duration::from_millis(STOP_POLL_MS)).await;
    }
    if let Some(node) = node {
        node.shutdown().await;
        LEADERSHIP_RELEASED.store(true, Ordering::Release);
    } else if broker.config.is_cluster() {
        // Controlled shutdown: this shard's partitions keep serving until shard 0 has given
        // up the broker's leaderships, so clients move with retriable errors, not timeouts.
        let deadline = std::time::Instant::now() + RELEASE_WAIT;
        while !LEADERSHIP_RELEASED.load(Ordering::Acquire) && std::time::Instant::now() < deadline {
            glommio::timer::sleep(Duration::from_millis(STOP_POLL_MS)).await;
        }
    }
    tracing::info!(shard = id, "stopping: flushing partitions");
    broker.partitions.close_all().await;
    Ok(())
}

/// Accepts the connections of one listener on this shard, within the connection limits.
async fn accept_loop(
    accept: Rc<Broker>,
    listener: glommio::net::TcpListener,
    on: Rc<crate::security::Listener>,
    tls: Option<Rc<crate::security::tls::Acceptor>>,
) {
    loop {
        match listener.accept().await {
            Ok(stream) => {
                let slot = match crate::net::ConnSlot::take(&accept.config, &stream) {
                    Ok(slot) => {
                        crate::metrics::bump(&accept.metrics.connections_accepted, 1);
                        slot
                    }
                    Err(why) => {
                        crate::metrics::bump(&accept.metrics.connections_refused, 1);
                        // Refused at once: the client sees the connection closed, as
                        // Kafka's acceptor does over its limits.
                        tracing::debug!("refusing connection: {why}");
                        drop(stream);
                        continue;
                    }
                };
                glommio::spawn_local(crate::net::connection::serve(
                    accept.clone(),
                    stream,
                    slot,
                    on.clone(),
                    tls.clone(),
                ))
                .detach();
            }
            Err(e) => {
                // Out of descriptors and the like: keep serving existing connections.
                tracing::warn!("accept: {e}");
                glommio::timer::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// Shard 0 of a cluster node: joins the metadata quorum, installs each new image on every
/// shard, registers and heartbeats, and does the active controller's duties when it leads.
async fn start_cluster_node(
    broker: &Rc<Broker>,
    rec: crate::cluster::node::Recovered,
    nr: usize,
    stop: &Arc<AtomicBool>,
) -> anyhow::Result<Rc<crate::cluster::node::ClusterNode>> {
    let node = crate::cluster::node::ClusterNode::start(broker.config.clone(), rec, nr).await?;
    broker.controller.attach_cluster(node.clone());
    let controller = broker.controller.clone();
    node.spawn_publisher(stop.clone(), move |meta| {
        let controller = controller.clone();
        async move { controller.install_image(meta).await }
    });
    node.spawn_membership(stop.clone());
    node.spawn_controller_duties(stop.clone());
    Ok(node)
}

/// A panic is a bug (the third kind of failure in conventions.md). Left alone, it would end
/// only the panicking shard's thread while the other shards keep serving: a silent partial
/// outage, with that shard's partitions gone and its appends half done. So the whole process
/// stops at once: the panic is logged (the default hook), then `abort()` (exit by SIGABRT,
/// nothing flushed, no destructor run); a supervisor restarts the broker and recovery runs.
fn abort_on_panic() {
    let log = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        log(info);
        tracing::error!("a shard panicked: stopping the broker (a panic is a bug)");
        std::process::abort();
    }));
}

/// SO_REUSEPORT would let a second broker share the port silently, so refuse a port that
/// something listens on. A plain bind also fails on our own TIME_WAIT leftovers after a
/// restart, so a failed bind is only fatal when a connect shows a live listener. After a
/// kill -9 the dead broker's listener lingers until the kernel tears down its io_uring (it
/// still holds the socket), so a listener is given a few seconds to go away.
fn ensure_port_free(addr: std::net::SocketAddr) -> anyhow::Result<()> {
    let mut probe = addr;
    if probe.ip().is_unspecified() {
        probe.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let deadline = std::time::Instant::now() + Duration::from_millis(PORT_WAIT_MS);
    loop {
        if std::net::TcpListener::bind(addr).is_ok() {
            return Ok(());
        }
        match std::net::TcpStream::connect_timeout(&probe, Duration::from_millis(500)) {
            // A connect to a port with no listener can connect to itself (TCP simultaneous
            // open): that is no other broker.
            Ok(s) if s.local_addr().ok() == s.peer_addr().ok() => return Ok(()),
            Ok(_) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(100));
            }
            Ok(_) => anyhow::bail!("listen {addr}: another process is listening on this port"),
            Err(_) => return Ok(()),
        }
    }
}

/// One broker per data dir: an exclusive flock held for the life of the process.
fn lock_data_dir(dir: &std::path::Path) -> anyhow::Result<std::fs::File> {
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join(".lock"))?;
    // SAFETY: flock on a descriptor we own.
    let r = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    anyhow::ensure!(
        r == 0,
        "data dir {} is in use by another flumen process",
        dir.display()
    );
    Ok(f)
}

/// Descriptors: one per connection (its two halves share the socket), one per
/// partition (its active segment) and one more per segment a fetch has read from its file. Lifts the limit on
/// open files to the kernel's ceiling (`fs.nr_open`) where allowed (root, CAP_SYS_RESOURCE),
/// else the soft limit to the hard one, and logs what it got: thousands of partitions or
/// connections need tens of thousands, more than a login's default.
fn raise_nofile() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain syscalls with a valid struct.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return;
    }
    let ceiling = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|s| s.trim().parse::<libc::rlim_t>().ok())
        .unwrap_or(lim.rlim_max);
    let up = |cur, max| {
        let l = libc::rlimit {
            rlim_cur: cur,
            rlim_max: max,
        };
        // SAFETY: plain syscall with a valid struct.
        unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &l) == 0 }
    };
    let got = if ceiling > lim.rlim_max && up(ceiling, ceiling) {
        ceiling
    } else if lim.rlim_cur < lim.rlim_max && up(lim.rlim_max, lim.rlim_max) {
        lim.rlim_max
    } else {
        lim.rlim_cur
    };
    tracing::info!(
        "open files limit {got}: a connection takes 1, a partition 1, and \
         each segment a fetch has read from its file 1 more"
    );
}

/// glommio locks its io_uring buffers; lift RLIMIT_MEMLOCK when allowed (root, CAP_IPC_LOCK).
fn raise_memlock() {
    let lim = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: plain syscall with a valid struct.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &lim) } != 0 {
        tracing::debug!(
            "could not raise RLIMIT_MEMLOCK: {}",
            std::io::Error::last_os_error()
        );
    }
}
