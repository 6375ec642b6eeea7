//! `hostset get daemonsets|nodes|endpoints|source`: the coordinator's fleet-wide view, printed
//! the way `kubectl get` prints it.

use std::process::ExitCode;

use crate::api::{DaemonSetDetail, DaemonSetView, Endpoint, NodeView, SourceView};

use super::client::{Client, CoordinatorArgs, Subject};
use super::describe::node_detail;
use super::output::{DataFormat, ListFormat, age, joined, or_none, print_data, table};

/// Display daemonsets, nodes or a daemonset's endpoints from the coordinator, as kubectl get
/// does.
///
/// The coordinator is --coordinator URL, $HOSTSET_COORDINATOR, or the [coordinator] table of
/// $HOSTSET_CONFIG_DIR/agent.toml (default /etc/hostset/agent.toml): on a host with an agent,
/// no flag is needed.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  hostset get daemonsets
  hostset get ds log-collector -o yaml
  hostset get nodes -o wide
  hostset get endpoints log-collector
  hostset --coordinator https://coordinator.example:8443 --token-file ~/.hostset-token get ds")]
pub struct Args {
    #[command(subcommand)]
    pub resource: Resource,
}

#[derive(Debug, clap::Subcommand)]
pub enum Resource {
    /// List daemonsets (or one) with their fleet-wide status.
    ///
    /// DESIRED, CURRENT, READY, UP-TO-DATE and AVAILABLE are Kubernetes' DaemonSetStatus
    /// counters: nodes that should run the daemon, that should and run it, whose daemon is
    /// ready, runs the current revision, has been ready for minReadySeconds.
    #[command(
        name = "daemonsets",
        visible_aliases = ["daemonset", "ds"],
        after_help = "\
Examples:
  hostset get daemonsets
  hostset get ds -o wide
  hostset get ds log-collector -o json | jq .status.numberUnavailable"
    )]
    Daemonsets(ListArgs),
    /// List the nodes whose agents report to the coordinator (or one).
    ///
    /// STATUS is NotReady when a node's agent has been silent longer than the grace period,
    /// with ",SchedulingDisabled" when the node is cordoned. DAEMONS counts the daemons
    /// running there.
    #[command(
        name = "nodes",
        visible_aliases = ["node", "no"],
        after_help = "\
Examples:
  hostset get nodes
  hostset get nodes -o wide
  hostset get node db-1 -o yaml"
    )]
    Nodes(ListArgs),
    /// Where a daemonset runs: each node with its addresses and the daemon's declared ports.
    #[command(
        name = "endpoints",
        visible_aliases = ["endpoint", "ep"],
        after_help = "\
Examples:
  hostset get endpoints log-collector
  hostset get ep node-exporter -o json | jq -r '.[] | select(.ready) | .addresses[0]'"
    )]
    Endpoints(EndpointsArgs),
    /// The git repository the coordinator follows ([source.git]): the commit in force, the
    /// branch head, and the nodes lagging behind it with their reason.
    #[command(
        name = "source",
        visible_aliases = ["git"],
        after_help = "\
Examples:
  hostset get source
  hostset get source -o json | jq -r '.lagging[].node'"
    )]
    Source(SourceArgs),
}

#[derive(Debug, clap::Args)]
pub struct SourceArgs {
    /// Output format [default: a table].
    #[arg(short, long, value_enum, value_name = "FORMAT")]
    pub output: Option<DataFormat>,
}

#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// Only this one.
    #[arg(value_name = "NAME")]
    pub name: Option<String>,
    /// Output format [default: a table].
    #[arg(short, long, value_enum, value_name = "FORMAT")]
    pub output: Option<ListFormat>,
}

#[derive(Debug, clap::Args)]
pub struct EndpointsArgs {
    /// The daemonset.
    #[arg(value_name = "DAEMONSET")]
    pub daemonset: String,
    /// Output format [default: a table].
    #[arg(short, long, value_enum, value_name = "FORMAT")]
    pub output: Option<DataFormat>,
}

pub fn run(args: Args, coordinator: &CoordinatorArgs) -> anyhow::Result<ExitCode> {
    let client = Client::new(coordinator)?;
    match args.resource {
        Resource::Daemonsets(a) => daemonsets(&client, a),
        Resource::Nodes(a) => nodes(&client, a),
        Resource::Endpoints(a) => endpoints(&client, a),
        Resource::Source(a) => source(&client, a),
    }
}

fn source(client: &Client, a: SourceArgs) -> anyhow::Result<ExitCode> {
    let view: SourceView = client.get(&["source"], None)?;
    if let Some(format) = a.output {
        print_data(&view, format)?;
        return Ok(ExitCode::SUCCESS);
    }
    let Some(git) = &view.git else {
        eprintln!("The coordinator follows no git repository ([source.git] in coordinator.toml).");
        return Ok(ExitCode::SUCCESS);
    };
    let short = |c: &str| or_none(&c.chars().take(12).collect::<String>());
    let problem = if !git.fetch_error.is_empty() {
        git.fetch_error.clone()
    } else if !git.refused.is_empty() {
        format!("head {} refused", short(&git.refused))
    } else {
        "<none>".to_string()
    };
    print!(
        "{}",
        table(&[
            [
                "REPOSITORY",
                "REF",
                "COMMIT",
                "HEAD",
                "NODES-CURRENT",
                "NODES-LAGGING",
                "PROBLEM"
            ]
            .map(String::from)
            .to_vec(),
            vec![
                git.url.clone(),
                git.reference.clone(),
                short(&git.commit),
                short(&git.head),
                view.current.to_string(),
                view.lagging.len().to_string(),
                problem,
            ],
        ])
    );
    for line in &git.refused_because {
        eprintln!("{line}");
    }
    if !view.lagging.is_empty() {
        println!();
        let mut rows = vec![["NODE", "COMMIT", "HEAD", "WHY"].map(String::from).to_vec()];
        for l in &view.lagging {
            rows.push(vec![
                l.node.clone(),
                short(&l.commit),
                short(&l.head),
                or_none(&l.reason),
            ]);
        }
        print!("{}", table(&rows));
    }
    Ok(ExitCode::SUCCESS)
}

/// One object for `get KIND NAME`, the list otherwise, as kubectl prints them.
fn print_list<T: serde::Serialize>(
    items: &[T],
    single: bool,
    format: DataFormat,
) -> anyhow::Result<()> {
    match items {
        [one] if single => print_data(one, format),
        _ => print_data(&items, format),
    }
}

fn data_format(format: Option<ListFormat>) -> Option<DataFormat> {
    match format {
        Some(ListFormat::Json) => Some(DataFormat::Json),
        Some(ListFormat::Yaml) => Some(DataFormat::Yaml),
        Some(ListFormat::Wide) | None => None,
    }
}

fn daemonsets(client: &Client, a: ListArgs) -> anyhow::Result<ExitCode> {
    let views: Vec<DaemonSetView> = match &a.name {
        Some(name) => {
            let subject = Subject {
                kind: "daemonset",
                name,
            };
            let detail: DaemonSetDetail = client.get(&["daemonsets", name], Some(subject))?;
            vec![detail.daemonset]
        }
        None => client.get(&["daemonsets"], None)?,
    };
    if let Some(format) = data_format(a.output) {
        print_list(&views, a.name.is_some(), format)?;
    } else if views.is_empty() {
        eprintln!("No daemonsets found.");
    } else {
        let wide = a.output == Some(ListFormat::Wide);
        print!(
            "{}",
            table(&daemonset_rows(&views, wide, super::output::now()))
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// kubectl's daemonset columns; wide adds the selector, revision and generation.
pub(super) fn daemonset_rows(views: &[DaemonSetView], wide: bool, now: u64) -> Vec<Vec<String>> {
    let mut header = [
        "NAME",
        "DESIRED",
        "CURRENT",
        "READY",
        "UP-TO-DATE",
        "AVAILABLE",
        "NODE SELECTOR",
        "AGE",
    ]
    .map(String::from)
    .to_vec();
    if wide {
        header.extend(["SELECTOR", "REVISION", "GENERATION"].map(String::from));
    }
    let mut rows = vec![header];
    for v in views {
        let s = &v.status;
        let mut row = vec![
            v.name.clone(),
            s.desired_number_scheduled.to_string(),
            s.current_number_scheduled.to_string(),
            s.number_ready.to_string(),
            s.updated_number_scheduled.to_string(),
            s.number_available.to_string(),
            or_none(&v.node_selector),
            age(v.created_at, now),
        ];
        if wide {
            row.extend([
                or_none(&v.selector),
                or_none(&v.revision),
                v.generation.to_string(),
            ]);
        }
        rows.push(row);
    }
    rows
}

fn nodes(client: &Client, a: ListArgs) -> anyhow::Result<ExitCode> {
    let views: Vec<NodeView> = match &a.name {
        Some(name) => vec![node_detail(client, name)?.node],
        None => client.get(&["nodes"], None)?,
    };
    if let Some(format) = data_format(a.output) {
        print_list(&views, a.name.is_some(), format)?;
    } else if views.is_empty() {
        eprintln!("No nodes found.");
    } else {
        let wide = a.output == Some(ListFormat::Wide);
        print!("{}", table(&node_rows(&views, wide, super::output::now())));
    }
    Ok(ExitCode::SUCCESS)
}

/// kubectl's STATUS of a node: `Ready`, `NotReady`, with `,SchedulingDisabled` when cordoned.
pub(super) fn node_status(n: &NodeView) -> String {
    if n.unschedulable {
        format!("{},SchedulingDisabled", n.status)
    } else {
        n.status.clone()
    }
}

pub(super) fn labels_of(n: &NodeView) -> Vec<String> {
    n.labels.iter().map(|(k, v)| format!("{k}={v}")).collect()
}

/// Prefixes of the labels every agent sets by itself (`kubernetes.io/hostname`,
/// `hostset.io/os-id`, ...): the table leaves them out so that the operator's own labels
/// stay readable; `-o wide`, `json` and `describe` show them all.
const AUTOMATIC_LABEL_PREFIXES: [&str; 2] = ["kubernetes.io/", "hostset.io/"];

fn own_labels_of(n: &NodeView) -> Vec<String> {
    n.labels
        .iter()
        .filter(|(k, _)| !AUTOMATIC_LABEL_PREFIXES.iter().any(|p| k.starts_with(p)))
        .map(|(k, v)| format!("{k}={v}"))
        .collect()
}

pub(super) fn node_rows(views: &[NodeView], wide: bool, now: u64) -> Vec<Vec<String>> {
    let mut header = ["NAME", "STATUS", "DAEMONS", "LABELS", "AGE", "LAST-SEEN"]
        .map(String::from)
        .to_vec();
    if wide {
        header.extend(["ADDRESSES", "TAINTS", "VERSION", "COMMIT"].map(String::from));
    }
    let mut rows = vec![header];
    for n in views {
        let mut row = vec![
            n.name.clone(),
            node_status(n),
            n.daemons.to_string(),
            joined(&if wide { labels_of(n) } else { own_labels_of(n) }),
            age(n.first_seen, now),
            age(n.last_seen, now),
        ];
        if wide {
            row.extend([
                joined(&n.addresses),
                joined(&n.taints),
                or_none(&n.agent_version),
                or_none(&n.commit.chars().take(12).collect::<String>()),
            ]);
        }
        rows.push(row);
    }
    rows
}

fn endpoints(client: &Client, a: EndpointsArgs) -> anyhow::Result<ExitCode> {
    let subject = Subject {
        kind: "daemonset",
        name: &a.daemonset,
    };
    let endpoints: Vec<Endpoint> =
        client.get(&["daemonsets", &a.daemonset, "endpoints"], Some(subject))?;
    if let Some(format) = a.output {
        print_data(&endpoints, format)?;
    } else if endpoints.is_empty() {
        eprintln!(
            "No endpoints found: daemonset {} runs nowhere.",
            a.daemonset
        );
    } else {
        print!("{}", table(&endpoint_rows(&endpoints)));
    }
    Ok(ExitCode::SUCCESS)
}

/// PORTS as `kubectl get services` writes them: `80/TCP,9100/TCP`, with the port's name
/// first when it has one (`metrics:9100/TCP`).
pub(super) fn endpoint_rows(endpoints: &[Endpoint]) -> Vec<Vec<String>> {
    let mut rows = vec![
        ["NODE", "ADDRESSES", "PORTS", "READY"]
            .map(String::from)
            .to_vec(),
    ];
    for e in endpoints {
        let ports: Vec<String> = e
            .ports
            .iter()
            .map(|p| {
                if p.name.is_empty() {
                    format!("{}/{}", p.port, p.protocol)
                } else {
                    format!("{}:{}/{}", p.name, p.port, p.protocol)
                }
            })
            .collect();
        rows.push(vec![
            e.node.clone(),
            joined(&e.addresses),
            joined(&ports),
            e.ready.to_string(),
        ]);
    }
    rows
}
