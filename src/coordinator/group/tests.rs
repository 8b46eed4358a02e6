//! The group coordinator driven by a manual clock: every deadline (initial rebalance delay,
//! rebalance timeout, session timeout, offset retention) is crossed by moving the clock and
//! calling the timer's `tick` (or `expire_offsets`), never by sleeping. JoinGroup and SyncGroup
//! block until their rebalance completes, so they run as tasks the test looks in on.

use super::*;
use crate::coordinator::testkit::{run, settle, Bench};
use bytes::Bytes;
use std::time::Duration;

const SESSION_MS: i32 = 10_000;
const REBALANCE_MS: i32 = 30_000;
/// `Config::default().group_initial_rebalance_delay_ms`.
const INITIAL_DELAY: Duration = Duration::from_millis(3000);

fn join_req(group: &str, member_id: &str, instance: Option<&str>, require_id: bool) -> JoinRequest {
    JoinRequest {
        group: group.into(),
        member_id: member_id.into(),
        instance_id: instance.map(String::from),
        client_id: "client".into(),
        client_host: "/127.0.0.1".into(),
        session_timeout_ms: SESSION_MS,
        rebalance_timeout_ms: REBALANCE_MS,
        protocol_type: "consumer".into(),
        protocols: vec![("range".into(), Bytes::from_static(b"subscription"))],
        require_member_id: require_id,
        can_skip_assignment: false,
    }
}

fn member(generation: i32, member_id: &str, instance: Option<&str>) -> MemberRef {
    MemberRef {
        group: "g".into(),
        generation,
        member_id: member_id.into(),
        instance_id: instance.map(String::from),
    }
}

fn sync_req(
    generation: i32,
    member_id: &str,
    instance: Option<&str>,
    assignments: &[(&str, &'static [u8])],
) -> SyncRequest {
    SyncRequest {
        member: member(generation, member_id, instance),
        assignments: assignments
            .iter()
            .map(|(m, a)| (m.to_string(), Bytes::from_static(a)))
            .collect(),
    }
}

/// JoinGroup and SyncGroup, the two calls that block until a rebalance step completes.
trait Op: Send + 'static {
    type Out: 'static;
    fn run(
        self,
        c: Rc<Coordinator>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Self::Out>>>;
}

impl Op for JoinRequest {
    type Out = JoinOut;
    fn run(
        self,
        c: Rc<Coordinator>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = JoinOut>>> {
        Box::pin(async move { c.join(self).await.expect("the coordinator is this shard") })
    }
}

impl Op for SyncRequest {
    type Out = SyncOut;
    fn run(
        self,
        c: Rc<Coordinator>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = SyncOut>>> {
        Box::pin(async move { c.sync(self).await.expect("the coordinator is this shard") })
    }
}

/// A call running as its own task: the test sees whether it has answered yet.
struct Call<T> {
    task: glommio::Task<T>,
    done: Rc<std::cell::Cell<bool>>,
}

impl<T> Call<T> {
    fn ready(&self) -> bool {
        self.done.get()
    }
}

impl Call<JoinOut> {
    async fn join(self) -> JoinOut {
        self.task.await
    }
}

impl Call<SyncOut> {
    async fn sync(self) -> (ErrorCode, Bytes) {
        sync_out(self.task.await)
    }
}

fn spawn<R: Op>(c: &Rc<Coordinator>, req: R) -> Call<R::Out> {
    let (c, done) = (c.clone(), Rc::new(std::cell::Cell::new(false)));
    let d = done.clone();
    let task = glommio::spawn_local(async move {
        let r = req.run(c).await;
        d.set(true);
        r
    });
    Call { task, done }
}

fn sync_out(r: SyncOut) -> (ErrorCode, Bytes) {
    (r.error, r.assignment)
}

async fn call<R: Op>(c: &Rc<Coordinator>, req: R) -> R::Out {
    req.run(c.clone()).await
}

async fn join_now(c: &Rc<Coordinator>, req: JoinRequest) -> JoinOut {
    call(c, req).await
}

async fn heartbeat(
    c: &Coordinator,
    generation: i32,
    member_id: &str,
    instance: Option<&str>,
) -> ErrorCode {
    c.heartbeat(member(generation, member_id, instance))
        .await
        .expect("the coordinator is this shard")
}

async fn commit(
    c: &Coordinator,
    group: &str,
    generation: i32,
    member: &str,
    offset: i64,
) -> Vec<ErrorCode> {
    let req = CommitRequest {
        member: MemberRef {
            group: group.into(),
            generation,
            member_id: member.into(),
            instance_id: None,
        },
        offsets: vec![entry(0, offset, 3, Some("m"))],
        producer: None,
    };
    c.commit(req).await.expect("local")
}

/// A commit of topic "t".
fn entry(
    partition: i32,
    offset: i64,
    leader_epoch: i32,
    metadata: Option<&str>,
) -> OffsetCommitEntry {
    OffsetCommitEntry {
        topic: "t".into(),
        partition,
        offset,
        leader_epoch,
        metadata: metadata.map(String::from),
        topic_exists: true,
    }
}

/// Member ids of a group, and its state.
fn members(c: &Coordinator) -> (&'static str, Vec<String>) {
    let d = c.describe("g");
    (
        d.state,
        d.members.into_iter().map(|m| m.member_id).collect(),
    )
}

/// (leader, follower) of two answers of one generation.
fn leader_first(j1: JoinOut, j2: JoinOut) -> (JoinOut, JoinOut) {
    assert_eq!(j1.leader, j2.leader);
    if j1.leader == j1.member_id {
        (j1, j2)
    } else {
        (j2, j1)
    }
}

fn sorted<T: Ord>(mut v: Vec<T>) -> Vec<T> {
    v.sort();
    v
}

/// Two members join a new group together: (leader, follower) of generation 1.
async fn joined_pair(
    b: &Bench,
    c: &Rc<Coordinator>,
    instances: [Option<&str>; 2],
) -> (JoinOut, JoinOut) {
    let j1 = spawn(c, join_req("g", "", instances[0], false));
    let j2 = spawn(c, join_req("g", "", instances[1], false));
    settle().await;
    b.clock.advance(INITIAL_DELAY);
    c.tick();
    leader_first(j1.join().await, j2.join().await)
}

/// Two members join a new group together and sync: (leader, follower), generation 1, Stable.
/// The leader assigns "A" to itself and "B" to the follower.
async fn stable_pair(
    b: &Bench,
    c: &Rc<Coordinator>,
    instances: [Option<&str>; 2],
) -> (JoinOut, JoinOut) {
    let (leader, follower) = joined_pair(b, c, instances).await;
    let f = spawn(c, sync_req(1, &follower.member_id, instances[1], &[]));
    let l = sync_req(
        1,
        &leader.member_id,
        instances[0],
        &[(&leader.member_id, b"A"), (&follower.member_id, b"B")],
    );
    assert_eq!(
        sync_out(call(c, l).await),
        (ErrorCode::NONE, Bytes::from_static(b"A"))
    );
    assert_eq!(f.sync().await, (ErrorCode::NONE, Bytes::from_static(b"B")));
    assert_eq!(members(c).0, "Stable");
    (leader, follower)
}

#[test]
fn a_new_group_waits_out_the_initial_delay_and_members_joining_together_share_a_generation() {
    run(|| async {
        let b = Bench::new(1, &[]).await;
        let c = b.broker.groups.clone();
        let j1 = spawn(&c, join_req("g", "", None, false));
        let j2 = spawn(&c, join_req("g", "", None, false));
        settle().await;
        assert_eq!(members(&c).0, "PreparingRebalance");
        assert_eq!(members(&c).1.len(), 2);
        // Both joined, but a new group waits for more members until the delay is over.
        b.clock.advance(INITIAL_DELAY - Duration::from_millis(1));
        c.tick();
        settle().await;
        assert!(
            !j1.ready() && !j2.ready(),
            "completed before the initial delay"
        );
        b.clock.advance(Duration::from_millis(1));
        settle().await;
        assert!(!j1.ready(), "completed without the timer");
        c.tick();
        settle().await;
        assert!(j1.ready() && j2.ready());
        let (j1, j2) = (j1.join().await, j2.join().await);
        assert_eq!((j1.error, j2.error), (ErrorCode::NONE, ErrorCode::NONE));
        assert_eq!((j1.generation, j2.generation), (1, 1));
        assert_eq!(j1.protocol.as_deref(), Some("range"));
        let (leader, follower) = leader_first(j1, j2);
        // Only the leader learns the members (and their subscriptions).
        let all = sorted(leader.members.iter().map(|m| m.0.as_str()).collect());
        let want = sorted(vec![leader.member_id.as_str(), follower.member_id.as_str()]);
        assert_eq!(all, want);
        assert!(leader.members.iter().all(|m| m.2 == "subscription"));
        assert!(follower.members.is_empty());
        assert_eq!(members(&c).0, "CompletingRebalance");
    });
}

#[test]
fn member_id_required_then_the_rejoin_with_that_id_is_admitted() {
    run(|| async {
        let b = Bench::new(1, &[]).await;
        let c = b.broker.groups.clone();
        let first = join_now(&c, join_req("g", "", None, true)).await;
        assert_eq!(first.error, ErrorCode::MEMBER_ID_REQUIRED);
        assert!(first.member_id.starts_with("client-"));
        assert_eq!(members(&c).1, Vec::<String>::new(), "not a member yet");
        let unknown = join_now(&c, join_req("g", "made-up", None, true)).await;
        assert_eq!(unknown.error, ErrorCode::UNKNOWN_MEMBER_ID);
        let j = spawn(&c, join_req("g", &first.member_id, None, true));
        settle().await;
        b.clock.advance(INITIAL_DELAY);
        c.tick();
        let j = j.join().await;
        assert_eq!(j.error, ErrorCode::NONE);
        assert_eq!(j.member_id, first.member_id);
        assert_eq!(
            (j.generation, j.leader.as_str()),
            (1, first.member_id.as_str())
        );
        // An id handed out but not used within the session timeout is forgotten.
        let late = c.join(join_req("g2", "", None, true)).await.unwrap();
        assert_eq!(late.error, ErrorCode::MEMBER_ID_REQUIRED);
        b.clock
            .advance(Duration::from_millis(SESSION_MS as u64 + 1));
        c.tick();
        let again = c
            .join(join_req("g2", &late.member_id, None, true))
            .await
            .unwrap();
        assert_eq!(again.error, ErrorCode::UNKNOWN_MEMBER_ID);
    });
}

#[test]
fn sync_delivers_the_leaders_assignment_to_a_waiting_follower() {
    run(|| async {
        let b = Bench::new(1, &[]).await;
        let c = b.broker.groups.clone();
        let (leader, follower) = joined_pair(&b, &c, [None, None]).await;
        let f = spawn(&c, sync_req(1, &follower.member_id, None, &[]));
        settle().await;
        assert!(!f.ready(), "a follower waits for the leader's assignment");
        let l = sync_req(
            1,
            &leader.member_id,
            None,
            &[(&leader.member_id, b"A"), (&follower.member_id, b"B")],
        );
        assert_eq!(
            sync_out(call(&c, l).await),
            (ErrorCode::NONE, Bytes::from_static(b"A"))
        );
        assert_eq!(f.sync().await, (ErrorCode::NONE, Bytes::from_static(b"B")));
        assert_eq!(members(&c).0, "Stable");
        let d = c.describe("g");
        let got: Vec<&[u8]> = d.members.iter().map(|m| m.assignment.as_ref()).collect();
        assert!(got.contains(&&b"A"[..]) && got.contains(&&b"B"[..]));
        // A follower syncing once the group is stable gets its assignment at once.
        let again = sync_out(call(&c, sync_req(1, &follower.member_id, None, &[])).await);
        assert_eq!(again, (ErrorCode::NONE, Bytes::from_static(b"B")));
    });
}

#[test]
fn a_member_that_does_not_rejoin_is_removed_at_the_rebalance_deadline() {
    run(|| async {
        let b = Bench::new(1, &[]).await;
        let c = b.broker.groups.clone();
        let (a, bee) = stable_pair(&b, &c, [None, None]).await;
        // A newcomer starts a rebalance; members hear of it in their heartbeats.
        let newcomer = spawn(&c, join_req("g", "", None, false));
        settle().await;
        assert_eq!(members(&c).0, "PreparingRebalance");
        assert_eq!(
            heartbeat(&c, 1, &a.member_id, None).await,
            ErrorCode::REBALANCE_IN_PROGRESS
        );
        assert_eq!(
            heartbeat(&c, 1, &bee.member_id, None).await,
            ErrorCode::REBALANCE_IN_PROGRESS
        );
        // `a` rejoins only 20s in, `bee` never; both heartbeat meanwhile (so their sessions
        // live). The deadline runs from the start of the rebalance, not from the last join.
        let mut rejoin = None;
        for step in 1..=5 {
            b.clock.advance(Duration::from_secs(5));
            assert_eq!(
                heartbeat(&c, 1, &bee.member_id, None).await,
                ErrorCode::REBALANCE_IN_PROGRESS
            );
            if step < 4 {
                let e = heartbeat(&c, 1, &a.member_id, None).await;
                assert_eq!(e, ErrorCode::REBALANCE_IN_PROGRESS);
            } else if rejoin.is_none() {
                rejoin = Some(spawn(&c, join_req("g", &a.member_id, None, false)));
            }
            c.tick();
            settle().await;
            assert!(!newcomer.ready() && rejoin.as_ref().is_none_or(|r| !r.ready()));
        }
        b.clock.advance(Duration::from_secs(5));
        c.tick();
        settle().await;
        let rejoin = rejoin.expect("rejoined");
        assert!(
            rejoin.ready() && newcomer.ready(),
            "the rebalance outlived its timeout"
        );
        let (rejoin, newcomer) = (rejoin.join().await, newcomer.join().await);
        assert_eq!((rejoin.error, rejoin.generation), (ErrorCode::NONE, 2));
        assert_eq!((newcomer.error, newcomer.generation), (ErrorCode::NONE, 2));
        let want = sorted(vec![a.member_id.clone(), newcomer.member_id.clone()]);
        assert_eq!(sorted(members(&c).1), want);
        assert_eq!(
            heartbeat(&c, 1, &bee.member_id, None).await,
            ErrorCode::UNKNOWN_MEMBER_ID
        );
    });
}

#[test]
fn a_restarted_static_member_gets_its_assignment_back_and_its_old_id_is_fenced() {
    run(|| async {
        let b = Bench::new(1, &[]).await;
        let c = b.broker.groups.clone();
        let (leader, old) = stable_pair(&b, &c, [Some("i-a"), Some("i-b")]).await;
        // The follower restarts: a new member id, same group.instance.id. No rebalance.
        let back = join_now(&c, join_req("g", "", Some("i-b"), false)).await;
        assert_eq!(back.error, ErrorCode::NONE);
        assert_ne!(back.member_id, old.member_id);
        assert_eq!(
            (back.generation, back.leader.as_str()),
            (1, leader.member_id.as_str())
        );
        assert!(back.members.is_empty() && !back.skip_assignment);
        let (state, ids) = members(&c);
        assert_eq!(state, "Stable");
        assert!(ids.contains(&back.member_id) && !ids.contains(&old.member_id));
        let s = sync_out(call(&c, sync_req(1, &back.member_id, Some("i-b"), &[])).await);
        assert_eq!(s, (ErrorCode::NONE, Bytes::from_static(b"B")));
        assert_eq!(
            heartbeat(&c, 1, &back.member_id, Some("i-b")).await,
            ErrorCode::NONE
        );
        // The instance it replaced is fenced wherever it shows up.
        assert_eq!(
            heartbeat(&c, 1, &old.member_id, Some("i-b")).await,
            ErrorCode::FENCED_INSTANCE_ID
        );
        let s = sync_out(call(&c, sync_req(1, &old.member_id, Some("i-b"), &[])).await);
        assert_eq!(s.0, ErrorCode::FENCED_INSTANCE_ID);
        assert_eq!(members(&c).0, "Stable");
        assert_eq!(
            heartbeat(&c, 1, &leader.member_id, Some("i-a")).await,
            ErrorCode::NONE
        );
    });
}

#[test]
fn a_member_silent_past_its_session_timeout_is_removed_and_the_rest_rebalance() {
    run(|| async {
        let b = Bench::new(1, &[]).await;
        let c = b.broker.groups.clone();
        let (a, bee) = stable_pair(&b, &c, [None, None]).await;
        for _ in 0..2 {
            b.clock.advance(Duration::from_secs(5));
            assert_eq!(heartbeat(&c, 1, &a.member_id, None).await, ErrorCode::NONE);
            c.tick();
        }
        // Exactly one session timeout since `bee` was last seen: still a member.
        let (state, ids) = members(&c);
        assert_eq!((state, ids.len()), ("Stable", 2));
        b.clock.advance(Duration::from_millis(1));
        c.tick();
        assert_eq!(
            members(&c),
            ("PreparingRebalance", vec![a.member_id.clone()])
        );
        assert_eq!(
            heartbeat(&c, 1, &a.member_id, None).await,
            ErrorCode::REBALANCE_IN_PROGRESS
        );
        // The survivor rejoins and the rebalance completes at once: everyone left has joined.
        let j = spawn(&c, join_req("g", &a.member_id, None, false));
        settle().await;
        assert!(j.ready());
        let j = j.join().await;
        assert_eq!(
            (j.error, j.generation, j.leader.as_str()),
            (ErrorCode::NONE, 2, a.member_id.as_str())
        );
        assert_eq!(j.members.len(), 1);
        assert_eq!(
            heartbeat(&c, 1, &bee.member_id, None).await,
            ErrorCode::UNKNOWN_MEMBER_ID
        );
    });
}

#[test]
fn calls_of_another_generation_get_illegal_generation() {
    run(|| async {
        let b = Bench::new(1, &[]).await;
        let c = b.broker.groups.clone();
        let (a, _) = stable_pair(&b, &c, [None, None]).await;
        assert_eq!(heartbeat(&c, 1, &a.member_id, None).await, ErrorCode::NONE);
        for generation in [0, 2] {
            assert_eq!(
                heartbeat(&c, generation, &a.member_id, None).await,
                ErrorCode::ILLEGAL_GENERATION
            );
            let s = sync_out(call(&c, sync_req(generation, &a.member_id, None, &[])).await);
            assert_eq!(s.0, ErrorCode::ILLEGAL_GENERATION);
            assert_eq!(
                commit(&c, "g", generation, &a.member_id, 5).await,
                vec![ErrorCode::ILLEGAL_GENERATION]
            );
        }
        assert_eq!(
            heartbeat(&c, 1, "ghost", None).await,
            ErrorCode::UNKNOWN_MEMBER_ID
        );
        assert_eq!(
            commit(&c, "g", 1, &a.member_id, 5).await,
            vec![ErrorCode::NONE]
        );
        assert_eq!(members(&c).0, "Stable");
    });
}

#[test]
fn committed_offsets_are_fetched_expire_when_the_group_is_empty_and_reload_from_the_log() {
    run(|| async {
        let b = Bench::new(1, &[]).await;
        let c = b.broker.groups.clone();
        let (a, _) = stable_pair(&b, &c, [None, None]).await;
        assert_eq!(
            commit(&c, "g", 1, &a.member_id, 42).await,
            vec![ErrorCode::NONE]
        );
        // A "simple" commit: no membership.
        assert_eq!(commit(&c, "solo", -1, "", 7).await, vec![ErrorCode::NONE]);
        let fetch = |group: &str, stable: bool| FetchOffsetsRequest {
            group: group.into(),
            require_stable: stable,
            partitions: Some(vec![("t".into(), 0), ("t".into(), 1)]),
        };
        let got = c.fetch_offsets(fetch("g", false)).await.unwrap();
        let row = |partition, offset, leader_epoch, metadata: &str| OffsetRow {
            topic: "t".into(),
            partition,
            offset,
            leader_epoch,
            metadata: metadata.into(),
            error: ErrorCode::NONE,
        };
        assert_eq!(got[0], row(0, 42, 3, "m"));
        assert_eq!(got[1], row(1, -1, -1, ""));
        // A transaction's offsets stay invisible (and unstable) until its marker.
        let txn = CommitRequest {
            member: MemberRef {
                group: "solo".into(),
                generation: -1,
                member_id: String::new(),
                instance_id: None,
            },
            offsets: vec![entry(1, 9, -1, None)],
            producer: Some((77, 0)),
        };
        assert_eq!(c.commit(txn).await.unwrap(), vec![ErrorCode::NONE]);
        let got = c.fetch_offsets(fetch("solo", true)).await.unwrap();
        assert_eq!(got[1].error, ErrorCode::UNSTABLE_OFFSET_COMMIT);
        assert_eq!(
            c.fetch_offsets(fetch("solo", false)).await.unwrap()[1].offset,
            -1
        );
        c.complete_txn(77, true);
        assert_eq!(
            c.fetch_offsets(fetch("solo", true)).await.unwrap()[1].offset,
            9
        );
        // Retention: only the offsets of a group without members go.
        let retention = Duration::from_secs(b.config().offsets_retention_minutes as u64 * 60);
        b.clock.advance(retention);
        c.expire_offsets().await;
        assert_eq!(
            c.committed("solo").len(),
            2,
            "not older than the retention yet"
        );
        b.clock.advance(Duration::from_millis(1));
        c.expire_offsets().await;
        assert!(c.committed("solo").is_empty());
        assert_eq!(c.committed("g"), vec![("t".into(), 0, 42)]);
        // What the log holds is what the cache held.
        let reloaded = b.new_groups();
        assert!(reloaded.load_owned().await.unwrap() > 0);
        assert_eq!(reloaded.committed("g"), vec![("t".into(), 0, 42)]);
        assert!(reloaded.committed("solo").is_empty());
    });
}

#[test]
fn a_static_member_rejoining_with_a_replaced_member_id_is_fenced() {
    run(|| async {
        let b = Bench::new(1, &[]).await;
        let c = b.broker.groups.clone();
        let (_, old) = stable_pair(&b, &c, [Some("i-a"), Some("i-b")]).await;
        let back = join_now(&c, join_req("g", "", Some("i-b"), false)).await;
        assert_eq!(back.error, ErrorCode::NONE);
        // The replaced instance must stop (FENCED_INSTANCE_ID is fatal to it), not be told to
        // join afresh (UNKNOWN_MEMBER_ID), which would make it take the instance id back.
        let stale = join_now(&c, join_req("g", &old.member_id, Some("i-b"), false)).await;
        assert_eq!(stale.error, ErrorCode::FENCED_INSTANCE_ID);
        assert_eq!(members(&c).0, "Stable");
    });
}

#[test]
fn a_static_member_replaced_while_its_old_instance_waits_in_a_join_still_expires() {
    run(|| async {
        let b = Bench::new(1, &[]).await;
        let c = b.broker.groups.clone();
        let (a, old) = stable_pair(&b, &c, [Some("i-a"), Some("i-b")]).await;
        let newcomer = spawn(&c, join_req("g", "", None, false));
        settle().await;
        let old_rejoin = spawn(&c, join_req("g", &old.member_id, Some("i-b"), false));
        settle().await;
        // The instance restarts while its old incarnation is still blocked in JoinGroup.
        let back = spawn(&c, join_req("g", "", Some("i-b"), false));
        settle().await;
        assert!(old_rejoin.ready(), "the old incarnation is let go");
        assert_eq!(old_rejoin.join().await.error, ErrorCode::FENCED_INSTANCE_ID);
        let a_rejoin = spawn(&c, join_req("g", &a.member_id, Some("i-a"), false));
        let back = back.join().await;
        let newcomer = newcomer.join().await;
        assert_eq!((back.error, back.generation), (ErrorCode::NONE, 2));
        assert_eq!(a_rejoin.join().await.generation, 2);
        // The new incarnation then goes silent: its session must run out like anyone's.
        for _ in 0..3 {
            b.clock.advance(Duration::from_secs(4));
            for id in [&a.member_id, &newcomer.member_id] {
                let iid = (id == &a.member_id).then_some("i-a");
                assert_eq!(heartbeat(&c, 2, id, iid).await, ErrorCode::NONE);
            }
            c.tick();
        }
        let (_, ids) = members(&c);
        assert!(
            !ids.contains(&back.member_id),
            "a member silent for 12s outlived its 10s session"
        );
    });
}

#[test]
fn member_ids_handed_out_and_not_used_count_toward_the_group_size_limit() {
    run(|| async {
        let b = Bench::new(1, &[]).await;
        let c = b.broker.groups.clone();
        for _ in 0..membership::MAX_GROUP_MEMBERS {
            let j = join_now(&c, join_req("g", "", None, true)).await;
            assert_eq!(j.error, ErrorCode::MEMBER_ID_REQUIRED);
        }
        let over = join_now(&c, join_req("g", "", None, true)).await;
        assert_eq!(over.error, ErrorCode::GROUP_MAX_SIZE_REACHED);
        // Unused ids expire with the session timeout, and the group takes new ones again.
        b.clock
            .advance(Duration::from_millis(SESSION_MS as u64 + 1));
        c.tick();
        let j = join_now(&c, join_req("g", "", None, true)).await;
        assert_eq!(j.error, ErrorCode::MEMBER_ID_REQUIRED);
    });
}

async fn leave_all(c: &Coordinator, left: [&JoinOut; 2]) {
    let members = left.iter().map(|j| (j.member_id.clone(), None)).collect();
    let r = c.leave("g".into(), members).await.unwrap();
    assert!(r.error.is_ok() && r.members.iter().all(|x| x.is_ok()));
}

#[test]
fn a_group_everyone_left_is_forgotten_unless_it_has_committed_offsets() {
    run(|| async {
        let b = Bench::new(1, &[]).await;
        let c = b.broker.groups.clone();
        let (j1, j2) = joined_pair(&b, &c, [None, None]).await;
        leave_all(&c, [&j1, &j2]).await;
        assert_eq!(members(&c).0, "Empty");
        assert_eq!(c.describe("g").protocol_type, "consumer");
        c.expire_offsets().await;
        assert_eq!(members(&c).0, "Dead", "no members, no offsets: forgotten");

        // The same with a committed offset: the group's state stays (protocol type and all).
        let (j1, j2) = joined_pair(&b, &c, [None, None]).await;
        leave_all(&c, [&j1, &j2]).await;
        assert_eq!(commit(&c, "g", -1, "", 5).await, vec![ErrorCode::NONE]);
        c.expire_offsets().await;
        let d = c.describe("g");
        assert_eq!((d.state, d.protocol_type.as_str()), ("Empty", "consumer"));
    });
}

#[test]
fn a_coordinator_taking_over_resumes_the_stored_generation() {
    run(|| async {
        let b = Bench::new(1, &[]).await;
        let c = b.broker.groups.clone();
        let (leader, follower) = stable_pair(&b, &c, [None, Some("i-b")]).await;
        assert_eq!(
            commit(&c, "g", 1, &leader.member_id, 5).await,
            vec![ErrorCode::NONE]
        );
        // Another coordinator (the offsets partition's next leader) loads the log. Calls go
        // to it directly: the shard's registered coordinator is still `c`.
        let next = b.new_groups();
        next.load_owned().await.unwrap();
        let mut want = vec![leader.member_id.clone(), follower.member_id.clone()];
        want.sort();
        assert_eq!(members(&next), ("Stable", want));
        let ib = Some("i-b".to_string());
        // The members go on in their generation: heartbeats, commits, their assignments.
        let m = &next.members;
        assert_eq!(
            m.heartbeat("g", 1, &leader.member_id, &None),
            ErrorCode::NONE
        );
        assert_eq!(
            m.heartbeat("g", 1, &follower.member_id, &ib),
            ErrorCode::NONE
        );
        assert_eq!(
            m.heartbeat("g", 0, &follower.member_id, &ib),
            ErrorCode::ILLEGAL_GENERATION
        );
        assert_eq!(m.check_commit("g", 1, &follower.member_id, &ib), Ok(()));
        let d = next.describe("g");
        let assigned: Vec<_> = d
            .members
            .iter()
            .map(|m| (m.member_id.clone(), m.assignment.clone()))
            .collect();
        assert!(assigned.contains(&(leader.member_id.clone(), Bytes::from_static(b"A"))));
        assert!(assigned.contains(&(follower.member_id.clone(), Bytes::from_static(b"B"))));
        assert_eq!(next.committed("g"), vec![("t".into(), 0, 5)]);
        // The static member's instance id is still its own.
        let stale = m.join(join_req("g", "other", Some("i-b"), false)).await;
        assert_eq!(stale.error, ErrorCode::FENCED_INSTANCE_ID);
        // A member that never comes back is expired by its session, as before the takeover.
        b.clock
            .advance(Duration::from_millis(SESSION_MS as u64 + 1));
        assert_eq!(
            m.heartbeat("g", 1, &follower.member_id, &ib),
            ErrorCode::NONE
        );
        next.tick();
        assert_eq!(
            members(&next),
            ("PreparingRebalance", vec![follower.member_id.clone()])
        );
        // Leaving empties the group, and that is stored too: a third coordinator finds it
        // Empty, in a later generation.
        m.leave("g", vec![(follower.member_id.clone(), ib.clone())]);
        next.store_changed("g").await;
        assert_eq!(members(&next).0, "Empty");
        let third = b.new_groups();
        third.load_owned().await.unwrap();
        assert_eq!(members(&third), ("Empty", Vec::new()));
        assert_eq!(
            third.members.check_commit("g", 1, &follower.member_id, &ib),
            Err(ErrorCode::UNKNOWN_MEMBER_ID)
        );
        // Deleting the group deletes its record: a fourth coordinator does not know it.
        assert_eq!(third.delete_group("g").await, ErrorCode::NONE);
        let fourth = b.new_groups();
        fourth.load_owned().await.unwrap();
        assert!(!fourth.members.contains("g"));
        assert_eq!(fourth.describe("g").state, "Dead");
    });
}
