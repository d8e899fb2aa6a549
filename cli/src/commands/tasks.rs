//! `paas run-task NAME "COMMAND"`, `paas tasks NAME`, `paas terminate-task NAME ID` (Cloud
//! Foundry's v3 tasks): a command run once on the app's current droplet with its env.

use crate::client::{seg, Client};
use crate::output::{age, table};
use chrono::Utc;
use paas_common::api::{RunTaskRequest, TaskInfo};

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// App name
    pub name: String,
    /// The command, run with `/bin/sh -c` in the app's folder
    pub command: String,
    /// A name for the task (default: its id)
    #[arg(long = "name", id = "task_name")]
    pub task_name: Option<String>,
    /// Memory (e.g. 256M, 1G; default: the app's)
    #[arg(short = 'm', long)]
    pub memory: Option<String>,
    /// Disk (e.g. 512M, 1G; default: the app's)
    #[arg(long)]
    pub disk: Option<String>,
    /// Print the task as JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// App name
    pub name: String,
    /// Print the tasks as JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct TerminateArgs {
    /// App name
    pub name: String,
    /// The task's id (as `paas tasks` shows it)
    pub id: u64,
}

pub fn run(args: RunArgs, client: &Client) -> anyhow::Result<()> {
    let body = RunTaskRequest {
        command: args.command,
        name: args.task_name,
        memory: args.memory,
        disk: args.disk,
    };
    let task: TaskInfo = client.post_json(&format!("/v1/apps/{}/tasks", seg(&args.name)), &body)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&task)?);
    } else {
        println!(
            "Task {} ({}) of {} is {}: `paas tasks {}` shows its state, `paas logs {}` its output (TASK/{})",
            task.id, task.name, args.name, task.state, args.name, args.name, task.id
        );
    }
    Ok(())
}

pub fn list(args: ListArgs, client: &Client) -> anyhow::Result<()> {
    let tasks: Vec<TaskInfo> = client.get_json(&format!("/v1/apps/{}/tasks", seg(&args.name)))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&tasks)?);
        return Ok(());
    }
    let now = Utc::now();
    let rows: Vec<Vec<String>> = tasks
        .iter()
        .map(|t| {
            vec![
                t.id.to_string(),
                t.name.clone(),
                t.state.to_string(),
                t.exit_code.map_or("-".into(), |c| c.to_string()),
                t.reason.clone().unwrap_or_else(|| "-".into()),
                format!("{} ago", age(t.created_at, now)),
                t.command.clone(),
            ]
        })
        .collect();
    print!(
        "{}",
        table(
            &["ID", "NAME", "STATE", "EXIT", "REASON", "CREATED", "COMMAND"],
            &rows
        )
    );
    Ok(())
}

pub fn terminate(args: TerminateArgs, client: &Client) -> anyhow::Result<()> {
    let task: TaskInfo = client.post_json(
        &format!("/v1/apps/{}/tasks/{}/cancel", seg(&args.name), args.id),
        &serde_json::json!({}),
    )?;
    println!("Task {} of {} is {}", task.id, args.name, task.state);
    Ok(())
}
