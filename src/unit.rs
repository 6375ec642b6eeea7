//! A daemonset as a transient systemd unit: names, the property map, markers.
//!
//! Pure: `unit_spec` turns a [`DaemonSet`] into the exact properties sent with
//! `StartTransientUnit`; nothing here talks to systemd. The unit carries
//! markers (in `Environment=` and `Description=`) from which an agent that
//! restarts recognises its units without any local database: which
//! daemonset, which revision (a hash of the template), and the template labels
//! (for adoption of orphans by selector).
//!
//! # The mapping
//!
//! | spec field | systemd property | value |
//! |---|---|---|
//! | `name` | unit name | `hostset-<name>.service` |
//! | `name`, [`revision`] | `Description` | `hostset daemonset <name> (revision <rev>)` |
//! | — | `Slice` | `hostset.slice` |
//! | `notify` (TOML) / `hostset.io/notify: "true"` (template annotation) | `Type`, `NotifyAccess` | `notify`, `all` ([`unit_spec`]); otherwise `Type=exec` |
//! | `command`/`args` | `ExecStart` | `(argv[0], argv, false)`; through `hostsetd exec` when an argument holds `$` or `;` ([`needs_exec_shim`]) |
//! | `env` | `Environment` | `NAME=value` in order, then the markers |
//! | `user` / `group` | `User` / `Group` | only when set |
//! | `workingDir` | `WorkingDirectory` | only when set |
//! | `restartPolicy: Always` | `Restart`, `RestartUSec`, `StartLimitIntervalUSec` | `always`, [`UnitOptions::restart_usec`], `0` |
//! | — | `CollectMode` | `inactive-or-failed` |
//! | — | `MemoryAccounting`, `CPUAccounting`, `TasksAccounting` | `true` |
//! | `limits.memory` | `MemoryMax` | bytes, rounded up |
//! | `requests.memory` (else `limits.memory`) | `MemoryLow` | bytes, rounded up; not set when 0 |
//! | `limits.cpu` | `CPUQuotaPerSecUSec` | `milli × 1000` µs/s, at least 10000 (kubelet's 1 ms per 100 ms) |
//! | `requests.cpu` (else `limits.cpu`) | `CPUWeight` | [`cpu_weight`]; [`BEST_EFFORT_CPU_WEIGHT`] when neither is set |
//! | `terminationGracePeriodSeconds` | `TimeoutStopUSec` | `max(s, 1) × 1000000` ([`timeout_stop_usec`]) |
//! | — | `KillMode` | `mixed` |
//! | `mounts` (read-write) | `BindPaths` | `(hostPath, mountPath, false, recursive)` |
//! | `mounts` (`readOnly`) | `BindReadOnlyPaths` | same |
//! | `name`, [`revision`] | `LogExtraFields` | `HOSTSET_DAEMONSET=<name>`, `HOSTSET_REVISION=<rev>` |
//!
//! A property is only sent when the spec asks for it (no `MemoryMax` without
//! a memory limit, no `User` without a user, ...), so that systemd's defaults
//! stay in force otherwise. The exceptions are `CPUWeight` (see
//! [`BEST_EFFORT_CPU_WEIGHT`]) and `TimeoutStopUSec`, which always has a value
//! in the model.
//!
//! Like Kubernetes' `SetDefaults_Pod`, a request that is not given takes the
//! limit's value (`MemoryLow`, `CPUWeight`); the model and the revision keep
//! the spec as written.

use std::collections::BTreeMap;

use crate::quantity::Quantity;
use crate::spec::{
    DaemonSet, EnvVar, HttpGetAction, HttpHeader, Labels, Mount, NodeSelector,
    NodeSelectorRequirement, NodeSelectorTerm, PodTemplate, Port, PortRef, Probe, ProbeHandler,
    Process, Resources, Toleration,
};

/// The slice every hostset unit runs in.
pub const SLICE: &str = "hostset.slice";
/// Unit name prefix; the unit of daemonset NAME is `hostset-NAME.service`.
pub const UNIT_PREFIX: &str = "hostset-";
pub const UNIT_SUFFIX: &str = ".service";
/// Glob for `ListUnitsByPatterns`.
pub const UNIT_PATTERN: &str = "hostset-*.service";

/// Environment markers (systemd never expands Environment values, and they
/// survive daemon-reload verbatim).
pub const ENV_DAEMONSET: &str = "HOSTSET_DAEMONSET";
pub const ENV_REVISION: &str = "HOSTSET_REVISION";
pub const ENV_LABELS: &str = "HOSTSET_LABELS";
/// Journal field of an exec probe's output: `liveness`, `readiness` or `startup`.
pub const ENV_PROBE: &str = "HOSTSET_PROBE";
/// Provenance of a daemonset from `[source.git]`: the commit the unit was started from.
/// Not a marker adoption depends on: a new commit that leaves the template alone does not
/// restart the unit, which keeps the commit it was started from.
pub const ENV_COMMIT: &str = "HOSTSET_COMMIT";
/// With the exec shim: how many arguments travel in the environment.
pub const ENV_ARGC: &str = "HOSTSET_ARGC";
/// With the exec shim: argument `i` travels as `HOSTSET_ARGV_<i>`.
pub const ENV_ARGV_PREFIX: &str = "HOSTSET_ARGV_";
/// The subcommand of the shim (`hostsetd exec`) that execs the argv found in
/// the environment ([`argv_from_env`]).
pub const EXEC_SHIM_SUBCOMMAND: &str = "exec";

/// The longest daemonset name whose unit name systemd accepts: unit names are
/// at most 255 characters including `.service` (notes §8), and the prefix
/// and suffix take 16. A DNS-1123 subdomain may be up to 253 characters, so
/// validation has to apply this tighter bound.
pub const MAX_DAEMONSET_NAME_LEN: usize = 255 - UNIT_PREFIX.len() - UNIT_SUFFIX.len();

/// `CPUWeight` of a daemon that requests no CPU (neither `requests.cpu` nor
/// `limits.cpu`): 1, the weight kubelet's `MinShares` (2 shares) converts to,
/// which is what a BestEffort pod gets.
///
/// Why not leave systemd's default (100): every hostset unit runs in
/// `hostset.slice`, so `CPUWeight` only shares out the CPU time of that slice
/// among hostset daemons; against the rest of the host (`system.slice`,
/// `user.slice`) the slice competes as a whole, at weight 100, whatever its
/// children say. Among its siblings, the default 100 would put a daemon that
/// asked for nothing far *ahead* of daemons that did ask: 1 CPU requested
/// converts to 39, 100m to 4. With 1 the order is Kubernetes' order
/// (BestEffort < any request). The weight only matters under contention;
/// idle CPU is still used freely.
pub const BEST_EFFORT_CPU_WEIGHT: u64 = 1;

/// Prefix of the description of a unit hostset runs for a daemonset.
const DESCRIPTION_PREFIX: &str = "hostset daemonset ";
/// Prefix of the description of a unit whose daemonset was deleted with
/// orphan-on-delete.
const ORPHAN_DESCRIPTION_PREFIX: &str = "hostset orphan of daemonset ";

/// A D-Bus property value, in the shapes systemd's transient-unit API takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PropValue {
    /// `s`
    Str(String),
    /// `b`
    Bool(bool),
    /// `t`
    U64(u64),
    /// `as`
    Strs(Vec<String>),
    /// `a(sasb)`: ExecStart.
    Exec(Vec<ExecCommand>),
    /// `a(ssbt)`: BindPaths / BindReadOnlyPaths.
    Binds(Vec<BindMount>),
    /// `aay`: LogExtraFields.
    Bytes(Vec<Vec<u8>>),
}

/// One `ExecStart` entry: path, argv including `argv[0]`, ignore-failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecCommand {
    pub path: String,
    pub argv: Vec<String>,
    pub ignore_failure: bool,
}

/// One bind mount: source, destination, ignore-missing, recursive (MS_REC).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindMount {
    pub source: String,
    pub destination: String,
    pub ignore_missing: bool,
    pub recursive: bool,
}

/// One property of the unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Property {
    /// The systemd property name, e.g. `MemoryMax`.
    pub name: &'static str,
    pub value: PropValue,
}

/// Everything needed to start a daemonset's unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitSpec {
    /// `hostset-<name>.service`
    pub name: String,
    pub daemonset: String,
    /// [`revision`] of the template.
    pub revision: String,
    /// The template labels (also in the `HOSTSET_LABELS` marker).
    pub labels: Labels,
    /// In the order they are sent.
    pub properties: Vec<Property>,
}

/// What a running unit says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Markers {
    pub daemonset: String,
    pub revision: String,
    pub labels: Labels,
}

/// Settings of the host that shape every unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitOptions {
    /// Absolute path of the `hostsetd` binary. Used as ExecStart when an
    /// argument holds `$` or `;` (which systemd 252 mangles at daemon-reload):
    /// the argv then travels in Environment and `hostsetd exec` execs it.
    pub exec_shim: String,
    /// Delay before systemd restarts a daemon that exited (RestartUSec).
    pub restart_usec: u64,
}

impl Default for UnitOptions {
    fn default() -> Self {
        UnitOptions {
            exec_shim: "/usr/bin/hostsetd".into(),
            restart_usec: 1_000_000,
        }
    }
}

// ---------------------------------------------------------------------------
// Names

/// The unit that runs daemonset `daemonset`: `hostset-<name>.service`.
///
/// A daemonset name is a DNS-1123 subdomain (`[a-z0-9.-]`), which systemd
/// accepts in unit names as is: no escaping is needed. Names longer than
/// [`MAX_DAEMONSET_NAME_LEN`] give a unit name systemd refuses.
pub fn unit_name(daemonset: &str) -> String {
    format!("{UNIT_PREFIX}{daemonset}{UNIT_SUFFIX}")
}

/// The second unit name of `daemonset`, `hostset-<name>_2.service`: a surge rollout
/// (maxSurge > 0) starts the new revision under whichever of the two names is free, beside
/// the old unit, and stops the old one once the new one is available. (`_` cannot occur in a
/// daemonset name, so the two names never collide; the daemonset's name must then be at
/// most [`MAX_SURGE_DAEMONSET_NAME_LEN`] characters.)
pub fn second_unit_name(daemonset: &str) -> String {
    format!("{UNIT_PREFIX}{daemonset}{SECOND_UNIT_INFIX}{UNIT_SUFFIX}")
}

/// What [`second_unit_name`] adds to the name.
pub const SECOND_UNIT_INFIX: &str = "_2";

/// The longest daemonset name that allows surge rollouts (both unit names fit systemd's 255).
pub const MAX_SURGE_DAEMONSET_NAME_LEN: usize = MAX_DAEMONSET_NAME_LEN - SECOND_UNIT_INFIX.len();

/// The other of the daemonset's two unit names ([`unit_name`], [`second_unit_name`]).
pub fn other_unit_name(daemonset: &str, unit: &str) -> String {
    if unit == unit_name(daemonset) {
        second_unit_name(daemonset)
    } else {
        unit_name(daemonset)
    }
}

/// The daemonset a unit name stands for, the inverse of [`unit_name`].
///
/// `None` unless the name is `hostset-<name>.service` with `<name>` a valid
/// daemonset name (a DNS-1123 subdomain): a `hostset-*` unit that hostset
/// could not have made is not claimed.
pub fn daemonset_of(unit: &str) -> Option<&str> {
    let name = unit.strip_prefix(UNIT_PREFIX)?.strip_suffix(UNIT_SUFFIX)?;
    (!name.is_empty() && crate::syntax::is_dns1123_subdomain(name).is_empty()).then_some(name)
}

/// The description of the unit of `daemonset` at `revision`:
/// `hostset daemonset <name> (revision <rev>)`.
pub fn description(daemonset: &str, revision: &str) -> String {
    format!("{DESCRIPTION_PREFIX}{daemonset} (revision {revision})")
}

/// The description an orphaned unit is given at runtime (with
/// `SetUnitProperties`, the only marker that can change while the unit runs):
/// `hostset orphan of daemonset <name> (revision <rev>)`.
pub fn orphan_description(daemonset: &str, revision: &str) -> String {
    format!("{ORPHAN_DESCRIPTION_PREFIX}{daemonset} (revision {revision})")
}

/// Whether a unit description is that of an orphan ([`orphan_description`]).
pub fn is_orphan(description: &str) -> bool {
    description.starts_with(ORPHAN_DESCRIPTION_PREFIX)
}

// ---------------------------------------------------------------------------
// Revision

/// Kubernetes' `SafeEncodeString` alphabet (no vowels, no `0`/`1`/`3`): a
/// revision cannot spell a word, nor be mistaken for a number.
const REVISION_ALPHABET: &[u8; 27] = b"bcdfghjklmnpqrstvwxz2456789";
/// Characters in a revision: 27¹⁰ ≈ 2⁴⁷·⁵ values.
const REVISION_LEN: usize = 10;

const FNV_OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// FNV-1a, 64 bits.
fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(FNV_OFFSET_BASIS, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(FNV_PRIME)
    })
}

/// A stable hash of the whole pod template, the analogue of Kubernetes'
/// `controller-revision-hash`: 10 characters of
/// `bcdfghjklmnpqrstvwxz2456789`.
///
/// Any change to the template changes it (argv, env, resources, user,
/// mounts, labels, annotations, tolerations, nodeSelector, affinity, ...), so
/// a new revision is rolled out; and, like Kubernetes, an annotation change
/// alone is a new revision (that is how `kubectl rollout restart` works).
/// The rest of the daemonset (selector, update strategy, ...) is not part of
/// it, nor are hostset's [`UnitOptions`]: changing those restarts nothing.
///
/// # Stability
///
/// The hash is over an explicit canonical encoding, not over `Debug` output
/// or memory layout, so it is the same on every run, platform and hostset
/// version:
///
/// - a struct is the concatenation of its fields in a fixed order; a field
///   is `len(name) name len(value) value`, lengths as 8-byte big-endian
///   integers, names as in Kubernetes (`nodeSelector`,
///   `terminationGracePeriodSeconds`, ...);
/// - a field at its zero value (`""`, `0`, `false`, empty list or map, a
///   nested struct that encodes to nothing) is left out entirely, so a field
///   added to the model later, at its zero value, leaves every existing
///   revision unchanged;
/// - an `Option` that is `Some` is always written, even when its content is
///   zero, because `Some(0)` and `None` differ (`tolerationSeconds: 0`
///   evicts at once, none tolerates forever; an empty required node affinity
///   matches nothing, none matches everything);
/// - integers are decimal ASCII; lists are the concatenation of their
///   length-prefixed elements; maps are `len(k) k len(v) v` in key order;
/// - quantities are hashed as written, as Kubernetes does (`200Mi` and
///   `209715200` are different revisions).
///
/// Then FNV-1a 64 over the bytes, written as 10 base-27 digits (least
/// significant first) in Kubernetes' `SafeEncodeString` alphabet.
///
/// Values the decoders fill in (the defaulted `restartPolicy`, the
/// generated process and TOML mount names) are hashed too: changing how they
/// are generated changes revisions, and so restarts daemons.
pub fn revision(template: &PodTemplate) -> String {
    let mut c = Canon::default();
    encode_template(&mut c, template);
    let mut h = fnv1a64(&c.buf);
    let mut out = String::with_capacity(REVISION_LEN);
    for _ in 0..REVISION_LEN {
        out.push(char::from(REVISION_ALPHABET[(h % 27) as usize]));
        h /= 27;
    }
    out
}

/// The canonical encoding behind [`revision`].
#[derive(Default)]
struct Canon {
    buf: Vec<u8>,
}

impl Canon {
    fn bytes(&mut self, b: &[u8]) {
        self.buf.extend_from_slice(&(b.len() as u64).to_be_bytes());
        self.buf.extend_from_slice(b);
    }

    fn field(&mut self, name: &str, value: &[u8]) {
        self.bytes(name.as_bytes());
        self.bytes(value);
    }

    fn str(&mut self, name: &str, v: &str) {
        if !v.is_empty() {
            self.field(name, v.as_bytes());
        }
    }

    fn int(&mut self, name: &str, v: i64) {
        if v != 0 {
            self.field(name, v.to_string().as_bytes());
        }
    }

    fn opt_int(&mut self, name: &str, v: Option<i64>) {
        if let Some(v) = v {
            self.field(name, v.to_string().as_bytes());
        }
    }

    fn bool(&mut self, name: &str, v: bool) {
        if v {
            self.field(name, b"true");
        }
    }

    fn map(&mut self, name: &str, m: &BTreeMap<String, String>) {
        if !m.is_empty() {
            let mut c = Canon::default();
            for (k, v) in m {
                c.bytes(k.as_bytes());
                c.bytes(v.as_bytes());
            }
            self.field(name, &c.buf);
        }
    }

    fn strs(&mut self, name: &str, items: &[String]) {
        self.list(name, items, |c, s| c.buf.extend_from_slice(s.as_bytes()));
    }

    fn list<T>(&mut self, name: &str, items: &[T], encode: impl Fn(&mut Canon, &T)) {
        if !items.is_empty() {
            let mut c = Canon::default();
            for item in items {
                let mut e = Canon::default();
                encode(&mut e, item);
                c.bytes(&e.buf);
            }
            self.field(name, &c.buf);
        }
    }

    fn nested(&mut self, name: &str, encode: impl FnOnce(&mut Canon)) {
        let mut c = Canon::default();
        encode(&mut c);
        if !c.buf.is_empty() {
            self.field(name, &c.buf);
        }
    }

    /// `Some` is written even when its content encodes to nothing.
    fn opt_nested<T>(&mut self, name: &str, v: Option<&T>, encode: impl FnOnce(&mut Canon, &T)) {
        if let Some(v) = v {
            let mut c = Canon::default();
            encode(&mut c, v);
            self.field(name, &c.buf);
        }
    }
}

fn encode_template(c: &mut Canon, t: &PodTemplate) {
    // Destructured so that a field added to the model fails to compile here
    // until it is given an encoding.
    let PodTemplate {
        labels,
        annotations,
        node_name,
        node_selector,
        required_node_affinity,
        tolerations,
        restart_policy,
        termination_grace_period_seconds,
        host_network,
        process,
        mounts,
    } = t;
    c.map("labels", labels);
    c.map("annotations", annotations);
    c.str("nodeName", node_name);
    c.map("nodeSelector", node_selector);
    c.opt_nested(
        "requiredDuringSchedulingIgnoredDuringExecution",
        required_node_affinity.as_ref(),
        encode_node_selector,
    );
    c.list("tolerations", tolerations, encode_toleration);
    c.str("restartPolicy", restart_policy);
    c.int(
        "terminationGracePeriodSeconds",
        *termination_grace_period_seconds,
    );
    c.bool("hostNetwork", *host_network);
    c.nested("process", |c| encode_process(c, process));
    c.list("mounts", mounts, encode_mount);
}

fn encode_node_selector(c: &mut Canon, s: &NodeSelector) {
    let NodeSelector { terms } = s;
    c.list("nodeSelectorTerms", terms, |c, t| {
        let NodeSelectorTerm {
            match_expressions,
            match_fields,
        } = t;
        c.list("matchExpressions", match_expressions, encode_requirement);
        c.list("matchFields", match_fields, encode_requirement);
    });
}

fn encode_requirement(c: &mut Canon, r: &NodeSelectorRequirement) {
    let NodeSelectorRequirement {
        key,
        operator,
        values,
    } = r;
    c.str("key", key);
    c.str("operator", operator);
    c.strs("values", values);
}

fn encode_toleration(c: &mut Canon, t: &Toleration) {
    let Toleration {
        key,
        operator,
        value,
        effect,
        toleration_seconds,
    } = t;
    c.str("key", key);
    c.str("operator", operator);
    c.str("value", value);
    c.str("effect", effect);
    c.opt_int("tolerationSeconds", *toleration_seconds);
}

fn encode_process(c: &mut Canon, p: &Process) {
    let Process {
        name,
        argv,
        env,
        working_dir,
        user,
        group,
        resources,
        ports,
        notify,
        liveness_probe,
        readiness_probe,
        startup_probe,
    } = p;
    c.str("name", name);
    c.strs("argv", argv);
    c.list("env", env, |c, e| {
        let EnvVar { name, value } = e;
        c.str("name", name);
        c.str("value", value);
    });
    c.str("workingDir", working_dir);
    c.str("user", user);
    c.str("group", group);
    c.nested("resources", |c| {
        let Resources { requests, limits } = resources;
        c.map("requests", requests);
        c.map("limits", limits);
    });
    c.list("ports", ports, |c, p| {
        let Port {
            name,
            container_port,
            host_port,
            protocol,
        } = p;
        c.str("name", name);
        c.int("containerPort", *container_port);
        c.int("hostPort", *host_port);
        c.str("protocol", protocol);
    });
    c.bool("notify", *notify);
    c.opt_nested("livenessProbe", liveness_probe.as_ref(), encode_probe);
    c.opt_nested("readinessProbe", readiness_probe.as_ref(), encode_probe);
    c.opt_nested("startupProbe", startup_probe.as_ref(), encode_probe);
}

fn encode_probe(c: &mut Canon, p: &Probe) {
    let Probe {
        handler,
        initial_delay_seconds,
        timeout_seconds,
        period_seconds,
        success_threshold,
        failure_threshold,
        termination_grace_period_seconds,
    } = p;
    let port = |c: &mut Canon, port: &PortRef| match port {
        PortRef::Number(n) => c.int("port", *n),
        PortRef::Name(s) => c.str("portName", s),
    };
    match handler {
        None => {}
        Some(ProbeHandler::Exec { command }) => c.nested("exec", |c| c.strs("command", command)),
        Some(ProbeHandler::HttpGet(h)) => c.nested("httpGet", |c| {
            let HttpGetAction {
                path,
                port: p,
                host,
                scheme,
                http_headers,
            } = h;
            c.str("path", path);
            port(c, p);
            c.str("host", host);
            c.str("scheme", scheme);
            c.list("httpHeaders", http_headers, |c, h| {
                let HttpHeader { name, value } = h;
                c.str("name", name);
                c.str("value", value);
            });
        }),
        Some(ProbeHandler::TcpSocket { host, port: p }) => c.nested("tcpSocket", |c| {
            c.str("host", host);
            port(c, p);
        }),
    }
    c.int("initialDelaySeconds", *initial_delay_seconds);
    c.int("timeoutSeconds", *timeout_seconds);
    c.int("periodSeconds", *period_seconds);
    c.int("successThreshold", *success_threshold);
    c.int("failureThreshold", *failure_threshold);
    c.opt_int(
        "terminationGracePeriodSeconds",
        *termination_grace_period_seconds,
    );
}

fn encode_mount(c: &mut Canon, m: &Mount) {
    let Mount {
        name,
        host_path,
        mount_path,
        read_only,
    } = m;
    c.str("name", name);
    c.str("hostPath", host_path);
    c.str("mountPath", mount_path);
    c.bool("readOnly", *read_only);
}

// ---------------------------------------------------------------------------
// Resources

/// kubelet's `MinShares`.
const MIN_SHARES: i128 = 2;
/// kubelet's `MaxShares` (the kernel's `MAX_SHARES`, 2¹⁸).
const MAX_SHARES: i128 = 262_144;
/// kubelet's `SharesPerCPU`.
const SHARES_PER_CPU: i128 = 1024;
/// kubelet's `MinQuotaPeriod` (1 ms) per `QuotaPeriod` (100 ms), per second.
const MIN_CPU_QUOTA_PER_SEC_USEC: u64 = 10_000;

/// The `CPUWeight` for a CPU request of `request_milli` millicores.
///
/// Two steps, both from Kubernetes:
///
/// 1. kubelet's `MilliCPUToShares` (`pkg/kubelet/cm/helpers_linux.go`):
///    `shares = milli × 1024 / 1000` (integer division), clamped to
///    `[2, 262144]` (`MinShares`, `MaxShares`); a request of 0 gives
///    `MinShares`.
/// 2. the cgroup v1 → v2 conversion kubelet applies to the pod cgroup
///    (`getCPUWeight` in `pkg/kubelet/cm/cgroup_manager_linux.go`, the same
///    formula as runc's `ConvertCPUSharesToCgroupV2Value` up to runc 1.3.1):
///    `weight = 1 + (shares − 2) × 9999 / 262142` (integer division), which
///    maps `[2, 262144]` onto systemd's `[1, 10000]`.
///
/// | request | shares | weight |
/// |---|---|---|
/// | 0, 1m, 2m | 2 (min) | 1 |
/// | 100m | 102 | 4 |
/// | 250m | 256 | 10 |
/// | 500m | 512 | 20 |
/// | 1 | 1024 | 39 |
/// | 2 | 2048 | 79 |
/// | 256 and more | 262144 (max) | 10000 |
///
/// Note that 1 CPU gives 39, not systemd's default 100: the linear formula
/// does not map the v1 default (1024) onto the v2 default (100). runc 1.3.2
/// and crun 1.23 switched containers to a non-linear (quadratic in log₂)
/// conversion that does (runc PR 4785, kubernetes issue 131216); kubelet's
/// own pod cgroups keep the linear one, and so does hostset, which needs
/// integer arithmetic that gives the same weight on every platform. Only the
/// ratios between hostset daemons matter (see [`BEST_EFFORT_CPU_WEIGHT`]).
/// Negative values are treated as 0.
pub fn cpu_weight(request_milli: i64) -> u64 {
    let shares = if request_milli <= 0 {
        MIN_SHARES
    } else {
        (i128::from(request_milli) * SHARES_PER_CPU / 1000).clamp(MIN_SHARES, MAX_SHARES)
    };
    // In [1, 10000] by the clamp above.
    (1 + (shares - MIN_SHARES) * 9999 / (MAX_SHARES - MIN_SHARES)) as u64
}

/// `CPUQuotaPerSecUSec` for a CPU limit of `limit_milli` millicores: the
/// daemon may use `milli / 1000` CPUs, i.e. `milli × 1000` µs of CPU time per
/// second (100m → 100000 = 10 %, 1 → 1000000 = 100 %, 1.5 → 1500000). Like
/// kubelet's `MilliCPUToQuota` (at least 1 ms per 100 ms period), the result
/// is at least 10000 (1 %); systemd would apply the same floor when it
/// writes `cpu.max`. `None` for 0 or less: Kubernetes treats a zero limit as
/// no limit (validation rejects it anyway).
pub fn cpu_quota_per_sec_usec(limit_milli: i64) -> Option<u64> {
    let milli = u64::try_from(limit_milli).ok().filter(|&m| m > 0)?;
    Some(milli.saturating_mul(1000).max(MIN_CPU_QUOTA_PER_SEC_USEC))
}

/// `TimeoutStopUSec` for `terminationGracePeriodSeconds`: the time between
/// SIGTERM and SIGKILL when the unit is stopped.
///
/// **Trap:** for systemd `TimeoutStopUSec=0` means *no timeout* (wait
/// forever), the opposite of Kubernetes' 0 ("stop immediately"). Grace
/// periods below 1 s are therefore raised to 1 s, which is what kubelet
/// itself gives a deleted pod: `calculateEffectiveGracePeriod`
/// (`pkg/kubelet/pod_workers.go`) ends with "no matter what, we always
/// supply a grace period of 1". Negative values (refused by validation) are
/// treated the same. Saturates instead of overflowing.
pub fn timeout_stop_usec(grace_period_seconds: i64) -> u64 {
    let seconds = u64::try_from(grace_period_seconds.max(1)).unwrap_or(1);
    seconds.saturating_mul(1_000_000)
}

/// A quantity of `map`, if it is there, parses and is not negative.
/// Validation has already refused anything else; a value that still does not
/// parse is left out rather than guessed.
fn quantity(map: &BTreeMap<String, String>, name: &str) -> Option<Quantity> {
    map.get(name)
        .and_then(|s| s.parse::<Quantity>().ok())
        .filter(|q| !q.is_negative())
}

// ---------------------------------------------------------------------------
// argv through the environment

/// Characters in an `ExecStart` argument that systemd 252 does not keep:
/// it expands `$VAR`/`${VAR}` and turns `$$` into `$` even for argv sent
/// over D-Bus, and `$` and `;` come back mangled from the transient unit file
/// after a `daemon-reload` (notes §9.1). Backslash, `%`, quotes, spaces and
/// tabs were seen to survive, and are sent as they are.
const EXEC_UNSAFE_CHARS: [char; 2] = ['$', ';'];

/// Prefixes systemd reads at the start of an `ExecStart=` command (`-`, `@`,
/// `:`, `+`, `!`, and `|` in newer versions). The transient file writes
/// `argv[0]` as the first word, and the reload parser takes such a prefix off
/// it after unquoting, so a bare program name starting with one would change
/// meaning on `daemon-reload`. (From reading `config_parse_exec`; an
/// absolute path never starts with one.)
const EXEC_PREFIX_CHARS: [char; 6] = ['-', '@', ':', '+', '!', '|'];

/// Whether `argv` must be started through the exec shim (`hostsetd exec`)
/// rather than put into `ExecStart` directly: some argument contains `$` or
/// `;`, or `argv[0]` starts with a character systemd reads as an
/// `ExecStart=` prefix.
pub fn needs_exec_shim(argv: &[String]) -> bool {
    argv.iter().any(|a| a.contains(EXEC_UNSAFE_CHARS))
        || argv
            .first()
            .is_some_and(|a0| a0.starts_with(EXEC_PREFIX_CHARS))
}

/// The argv as environment assignments: `HOSTSET_ARGC=<n>` and
/// `HOSTSET_ARGV_0=<argv[0]>` … `HOSTSET_ARGV_<n-1>=…`.
///
/// Why: systemd 252 mangles `$` and `;` in `ExecStart` arguments (expanded
/// at exec time, and corrupted in the transient unit file on
/// `daemon-reload`, after which the daemon crash-loops; notes §9.1), and
/// `ExecStartEx` with `no-env-expand` breaks the unit on reload (§9.2).
/// `Environment` values, on the other hand, are never expanded and survive a
/// reload verbatim. So such an argv is sent as environment, and `ExecStart`
/// runs `hostsetd exec`, which reads it back with [`argv_from_env`], removes
/// these variables from its environment and `execvp`s the daemon. The
/// daemon ends up as the unit's main process with the same PID, so
/// `Type=exec`, `KillMode` and `MainPID` behave as without the shim.
pub fn argv_env(argv: &[String]) -> Vec<String> {
    let mut env = Vec::with_capacity(argv.len() + 1);
    env.push(format!("{ENV_ARGC}={}", argv.len()));
    env.extend(
        argv.iter()
            .enumerate()
            .map(|(i, a)| format!("{ENV_ARGV_PREFIX}{i}={a}")),
    );
    env
}

/// The argv [`argv_env`] put into the environment, from `(name, value)`
/// pairs: the shim's own environment (`std::env::vars()`), or the unit's
/// `Environment` strings split at the first `=`.
///
/// `None` when `HOSTSET_ARGC` is missing, is not a decimal number, is 0, or
/// when one of `HOSTSET_ARGV_0` … `HOSTSET_ARGV_<n-1>` is missing; extra
/// `HOSTSET_ARGV_<i>` with `i ≥ n` are ignored. When a name occurs more
/// than once, the last value wins (as in systemd's `Environment=`).
pub fn argv_from_env(vars: impl Iterator<Item = (String, String)>) -> Option<Vec<String>> {
    let mut argc: Option<String> = None;
    let mut args: BTreeMap<usize, String> = BTreeMap::new();
    for (name, value) in vars {
        if name == ENV_ARGC {
            argc = Some(value);
        } else if let Some(index) = name.strip_prefix(ENV_ARGV_PREFIX)
            && let Some(i) = parse_index(index)
        {
            args.insert(i, value);
        }
    }
    let n = parse_index(&argc?)?;
    if n == 0 || n > args.len() {
        return None;
    }
    (0..n).map(|i| args.remove(&i)).collect()
}

/// A plain decimal index: digits only, no sign, no leading zero (so that
/// `HOSTSET_ARGV_01` is not taken for argument 1).
fn parse_index(s: &str) -> Option<usize> {
    let canonical =
        !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) && (s == "0" || !s.starts_with('0'));
    canonical.then(|| s.parse().ok()).flatten()
}

// ---------------------------------------------------------------------------
// Markers

/// `HOSTSET_LABELS`' value: `k=v,k2=v2` in key order. Label keys and values
/// are Kubernetes label syntax, which has neither `,` nor `=`.
pub fn labels_value(labels: &Labels) -> String {
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Parses `HOSTSET_LABELS`' value, leniently: empty pieces and pieces
/// without `=` are skipped, the value is everything after the first `=`, and
/// a repeated key keeps its last value.
pub fn parse_labels_value(s: &str) -> Labels {
    s.split(',')
        .filter_map(|piece| piece.split_once('='))
        .filter(|(k, _)| !k.is_empty())
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The markers a unit carries in its `Environment` (`Service.Environment`,
/// `NAME=value` strings).
///
/// `None` when `HOSTSET_DAEMONSET` or `HOSTSET_REVISION` is missing or
/// empty: such a unit was not made by hostset (or not by this scheme).
/// A missing `HOSTSET_LABELS` gives no labels; labels are parsed leniently
/// ([`parse_labels_value`]). When a name occurs more than once, the last
/// assignment wins, as it does for systemd, so a spec `env` entry that
/// happens to be called `HOSTSET_DAEMONSET` cannot override the markers,
/// which [`unit_spec`] puts last.
pub fn markers_from_environment(env: &[String]) -> Option<Markers> {
    let mut daemonset = None;
    let mut revision = None;
    let mut labels = None;
    for (name, value) in env.iter().filter_map(|e| e.split_once('=')) {
        match name {
            ENV_DAEMONSET => daemonset = Some(value),
            ENV_REVISION => revision = Some(value),
            ENV_LABELS => labels = Some(value),
            _ => {}
        }
    }
    let daemonset = daemonset.filter(|s| !s.is_empty())?;
    let revision = revision.filter(|s| !s.is_empty())?;
    Some(Markers {
        daemonset: daemonset.to_string(),
        revision: revision.to_string(),
        labels: labels.map(parse_labels_value).unwrap_or_default(),
    })
}

/// Mark `spec` as started from git commit `commit`: `HOSTSET_COMMIT=<id>` appended to its
/// `Environment` (after the markers, so a spec `env` entry cannot override it) and to its
/// `LogExtraFields` (`journalctl HOSTSET_COMMIT=<id>`).
pub fn set_commit(spec: &mut UnitSpec, commit: &str) {
    let prefix = format!("{ENV_COMMIT}=");
    let assignment = format!("{prefix}{commit}");
    for p in &mut spec.properties {
        match (&mut p.value, p.name) {
            (PropValue::Strs(v), "Environment") => {
                v.retain(|e| !e.starts_with(&prefix));
                v.push(assignment.clone());
            }
            (PropValue::Bytes(v), "LogExtraFields") => {
                v.retain(|e| !e.starts_with(prefix.as_bytes()));
                v.push(assignment.clone().into_bytes());
            }
            _ => {}
        }
    }
}

/// The commit a unit carries in its `Environment` ([`set_commit`]); the last assignment wins.
pub fn commit_from_environment(env: &[String]) -> Option<String> {
    env.iter()
        .rev()
        .find_map(|e| e.strip_prefix(ENV_COMMIT)?.strip_prefix('='))
        .filter(|c| !c.is_empty())
        .map(str::to_string)
}

/// The marker assignments [`unit_spec`] appends to `Environment`.
pub fn marker_environment(daemonset: &str, revision: &str, labels: &Labels) -> Vec<String> {
    vec![
        format!("{ENV_DAEMONSET}={daemonset}"),
        format!("{ENV_REVISION}={revision}"),
        format!("{ENV_LABELS}={}", labels_value(labels)),
    ]
}

// ---------------------------------------------------------------------------
// The unit

/// The unit of daemonset `ds`: its name, markers and the properties for
/// `StartTransientUnit`, in this order (each only when it applies, see the
/// [module documentation](self)):
///
/// `Description`, `Slice`, `Type`, (`NotifyAccess`), `ExecStart`, `Environment`, `User`,
/// `Group`, `WorkingDirectory`, `Restart`, `RestartUSec`,
/// `StartLimitIntervalUSec`, `CollectMode`, `MemoryAccounting`,
/// `CPUAccounting`, `TasksAccounting`, `MemoryMax`, `MemoryLow`,
/// `CPUQuotaPerSecUSec`, `CPUWeight`, `TimeoutStopUSec`, `KillMode`,
/// `BindPaths`, `BindReadOnlyPaths`, `LogExtraFields`.
///
/// Decisions, beyond the one-to-one fields:
///
/// - A daemon declared `notify` gets `Type=notify`: systemd keeps the unit
///   `activating` until the daemon sends `READY=1`, so an active unit is a
///   ready daemon. `NotifyAccess=all` rather than `main`: a daemon started
///   by a wrapper script, or one that notifies from a helper process
///   (`systemd-notify --ready` in a shell script is a child of the shell),
///   would otherwise have its `READY=1` dropped by systemd and never become
///   active; the cgroup holds only the daemon's own processes. Measured on
///   systemd 252: with `User=nobody` and `NotifyAccess=main`, a script's
///   `systemd-notify --ready` left the unit `activating`; with `all` it
///   became active (as root, systemd-notify sends its parent's PID as the
///   sender, so `main` happened to work there). A daemon
///   that never sends it fails after systemd's start timeout
///   (`DefaultTimeoutStartSec`, 90 s) and is restarted.
/// - `ExecStart` is `(argv[0], argv, false)`. A bare `argv[0]` stays bare:
///   systemd looks it up in its `PATH` (notes §7). When [`needs_exec_shim`]
///   says so, it is `(exec_shim, [exec_shim, "exec"], false)` and the argv
///   travels in `Environment` ([`argv_env`]), after the spec's variables so
///   that they cannot override it. An empty argv (refused by validation)
///   gives no `ExecStart`, and systemd refuses the unit (`BadUnitSetting`).
/// - `Environment`: the spec's `env` in order, then the shim's variables if
///   any, then the markers (`HOSTSET_DAEMONSET`, `HOSTSET_REVISION`,
///   `HOSTSET_LABELS` from the *template* labels, which adoption matches
///   selectors against). Always sent, since the markers are always there.
/// - `Restart=always` with `StartLimitIntervalUSec=0`: Kubernetes restarts
///   a crashing container forever (with back-off); systemd's default start
///   limit (5 starts in 10 s) would leave the unit failed for good after a
///   few quick crashes (notes §6). systemd 252 has no restart back-off
///   (`RestartSteps=` came in 254), so the delay is a constant `RestartUSec`.
/// - `CollectMode=inactive-or-failed`: a failed transient unit would
///   otherwise keep its name and block the next start (notes §6).
/// - `KillMode=mixed`: on stop, SIGTERM goes to the main process only, and
///   after `TimeoutStopUSec` (or as soon as the main process has exited)
///   SIGKILL goes to everything left in the cgroup (`systemd.kill(5)`; the
///   second part from reading `service.c`, not measured). That is a container's
///   lifecycle: the runtime signals PID 1, and the rest of the container
///   dies with it. systemd's default (`control-group`) would SIGTERM every
///   process at once, workers before their supervisor.
/// - `MemoryLow` (not `MemoryMin`) for the memory request: best-effort
///   protection from reclaim, which is what a request promises; `MemoryMin`
///   would be a hard reservation the host cannot reclaim even under
///   pressure. On cgroup v2 protection is also bounded by the parent's
///   (`hostset.slice`) unless the `memory_recursiveprot` mount option is on.
/// - Bind mounts are recursive (`rbind`, `MS_REC`), like a hostPath volume.
///   A mount onto the same path (`mountPath` = `hostPath`, the usual case on a
///   host) ignores a missing source: the daemon sees the host's filesystem
///   there anyway, and a Kubernetes hostPath of the default type checks
///   nothing either (the seed's /var/lib/docker/containers is absent on hosts
///   without Docker). A remapped mount requires its source: without it the
///   unit fails at the NAMESPACE step instead of showing the daemon the wrong
///   directory.
/// - `LogExtraFields`: `journalctl HOSTSET_DAEMONSET=<name>` finds the
///   daemon's lines across unit restarts, `HOSTSET_REVISION=<rev>` those of
///   one revision.
pub fn unit_spec(ds: &DaemonSet, opts: &UnitOptions) -> UnitSpec {
    let template = &ds.template;
    let process = &template.process;
    let revision = revision(template);
    let labels = template.labels.clone();

    let mut props: Vec<Property> = Vec::new();
    let mut push = |name: &'static str, value: PropValue| props.push(Property { name, value });
    let str = |s: &str| PropValue::Str(s.to_string());

    push("Description", str(&description(&ds.name, &revision)));
    push("Slice", str(SLICE));
    if process.notify {
        push("Type", str("notify"));
        push("NotifyAccess", str("all"));
    } else {
        push("Type", str("exec"));
    }

    let (exec, argv_vars) = exec_start(&process.argv, opts);
    if let Some(exec) = exec {
        push("ExecStart", exec);
    }

    let mut env: Vec<String> = process
        .env
        .iter()
        .map(|e| format!("{}={}", e.name, e.value))
        .collect();
    env.extend(argv_vars);
    env.extend(marker_environment(&ds.name, &revision, &labels));
    push("Environment", PropValue::Strs(env));

    if !process.user.is_empty() {
        push("User", str(&process.user));
    }
    if !process.group.is_empty() {
        push("Group", str(&process.group));
    }
    if !process.working_dir.is_empty() {
        push("WorkingDirectory", str(&process.working_dir));
    }

    push("Restart", str("always"));
    push("RestartUSec", PropValue::U64(opts.restart_usec));
    push("StartLimitIntervalUSec", PropValue::U64(0));
    push("CollectMode", str("inactive-or-failed"));
    push("MemoryAccounting", PropValue::Bool(true));
    push("CPUAccounting", PropValue::Bool(true));
    push("TasksAccounting", PropValue::Bool(true));

    let resources = &process.resources;
    let bytes = |q: &Quantity| u64::try_from(q.value()).ok().filter(|&b| b > 0);
    let memory_limit = quantity(&resources.limits, "memory");
    let memory_request = quantity(&resources.requests, "memory").or_else(|| memory_limit.clone());
    if let Some(b) = memory_limit.as_ref().and_then(bytes) {
        push("MemoryMax", PropValue::U64(b));
    }
    if let Some(b) = memory_request.as_ref().and_then(bytes) {
        push("MemoryLow", PropValue::U64(b));
    }
    let cpu_limit = quantity(&resources.limits, "cpu");
    let cpu_request = quantity(&resources.requests, "cpu").or_else(|| cpu_limit.clone());
    if let Some(q) = cpu_limit
        .as_ref()
        .and_then(|q| cpu_quota_per_sec_usec(q.milli_value()))
    {
        push("CPUQuotaPerSecUSec", PropValue::U64(q));
    }
    let weight = cpu_request
        .as_ref()
        .map_or(BEST_EFFORT_CPU_WEIGHT, |q| cpu_weight(q.milli_value()));
    push("CPUWeight", PropValue::U64(weight));

    push(
        "TimeoutStopUSec",
        PropValue::U64(timeout_stop_usec(template.termination_grace_period_seconds)),
    );
    push("KillMode", str("mixed"));

    let bind = |m: &Mount| BindMount {
        source: m.host_path.clone(),
        destination: m.mount_path.clone(),
        ignore_missing: m.host_path == m.mount_path,
        recursive: true,
    };
    let rw: Vec<BindMount> = template
        .mounts
        .iter()
        .filter(|m| !m.read_only)
        .map(bind)
        .collect();
    let ro: Vec<BindMount> = template
        .mounts
        .iter()
        .filter(|m| m.read_only)
        .map(bind)
        .collect();
    if !rw.is_empty() {
        push("BindPaths", PropValue::Binds(rw));
    }
    if !ro.is_empty() {
        push("BindReadOnlyPaths", PropValue::Binds(ro));
    }

    push(
        "LogExtraFields",
        PropValue::Bytes(vec![
            format!("{ENV_DAEMONSET}={}", ds.name).into_bytes(),
            format!("{ENV_REVISION}={revision}").into_bytes(),
        ]),
    );

    UnitSpec {
        name: unit_name(&ds.name),
        daemonset: ds.name.clone(),
        revision,
        labels,
        properties: props,
    }
}

/// `ExecStart` for `argv` (none when it is empty), and the environment variables it needs:
/// an argv systemd would rewrite (`$`, `;`, ... see [`needs_exec_shim`]) runs through the exec
/// shim, which reads it back from those variables.
fn exec_start(argv: &[String], opts: &UnitOptions) -> (Option<PropValue>, Vec<String>) {
    if needs_exec_shim(argv) {
        let exec = ExecCommand {
            path: opts.exec_shim.clone(),
            argv: vec![opts.exec_shim.clone(), EXEC_SHIM_SUBCOMMAND.to_string()],
            ignore_failure: false,
        };
        (Some(PropValue::Exec(vec![exec])), argv_env(argv))
    } else {
        let exec = argv.first().map(|argv0| {
            PropValue::Exec(vec![ExecCommand {
                path: argv0.clone(),
                argv: argv.to_vec(),
                ignore_failure: false,
            }])
        });
        (exec, Vec::new())
    }
}

/// Prefix of the oneshot units that run exec probes. Not [`UNIT_PREFIX`]: they are no
/// daemon's unit, and the agent's listing and signals must not see them.
pub const PROBE_UNIT_PREFIX: &str = "hostset.probe-";

/// The transient unit that runs an exec probe's `command` once for daemonset `ds` (`kind`:
/// `liveness`, `readiness`, `startup`), as the daemon runs: its `User`, `Group`, `WorkingDirectory`, bind mounts and `env` (not the
/// markers), in [`SLICE`], outside the agent's own sandbox. `Type=oneshot`: its start job
/// ends when the command exits; `TimeoutStartUSec` is the probe's timeout, after which
/// systemd kills every process of the unit. `CollectMode` stays `inactive`, so that a failed
/// run can be read before it is reset.
pub fn probe_unit_spec(
    ds: &DaemonSet,
    name: &str,
    kind: &str,
    command: &[String],
    timeout_usec: u64,
    opts: &UnitOptions,
) -> UnitSpec {
    let daemon = unit_spec(ds, opts);
    let mut props: Vec<Property> = Vec::new();
    let mut push = |name: &'static str, value: PropValue| props.push(Property { name, value });
    push(
        "Description",
        PropValue::Str(format!("hostset {kind} probe of daemonset {}", ds.name)),
    );
    push("Slice", PropValue::Str(SLICE.to_string()));
    push("Type", PropValue::Str("oneshot".to_string()));
    let mut env: Vec<String> = ds
        .template
        .process
        .env
        .iter()
        .map(|e| format!("{}={}", e.name, e.value))
        .collect();
    let (exec, argv_vars) = exec_start(command, opts);
    if let Some(exec) = exec {
        push("ExecStart", exec);
    }
    env.extend(argv_vars);
    push("Environment", PropValue::Strs(env));
    for p in &daemon.properties {
        if matches!(
            p.name,
            "User" | "Group" | "WorkingDirectory" | "BindPaths" | "BindReadOnlyPaths"
        ) {
            push(p.name, p.value.clone());
        }
    }
    push("TimeoutStartUSec", PropValue::U64(timeout_usec.max(1)));
    // `journalctl HOSTSET_DAEMONSET=<name>` shows the probes' output with the daemon's.
    push(
        "LogExtraFields",
        PropValue::Bytes(vec![
            format!("{ENV_DAEMONSET}={}", ds.name).into_bytes(),
            format!("{ENV_PROBE}={kind}").into_bytes(),
        ]),
    );
    UnitSpec {
        name: name.to_string(),
        daemonset: ds.name.clone(),
        revision: daemon.revision,
        labels: Labels::new(),
        properties: props,
    }
}

impl UnitSpec {
    /// The property called `name`, if the unit has it.
    pub fn property(&self, name: &str) -> Option<&PropValue> {
        self.properties
            .iter()
            .find(|p| p.name == name)
            .map(|p| &p.value)
    }
}
