//! `shardbot params list|show`: the strategies' parameters as every mode will load them.

use std::path::PathBuf;

use anyhow::bail;
use clap::{Args, Subcommand};
use shardbot_strategy::{BUILT_IN, Kind, OptimizedFile, Value, schema};

#[derive(Args, Debug)]
pub struct ParamsArgs {
    /// The parameters file (a missing file means every strategy runs on its defaults).
    #[arg(
        long,
        default_value = "optimized_parameters.json",
        global = true,
        value_name = "FILE"
    )]
    file: PathBuf,
    #[command(subcommand)]
    command: ParamsCommand,
}

#[derive(Subcommand, Debug)]
enum ParamsCommand {
    /// Every built-in strategy and whether it runs on optimized parameters or defaults.
    List,
    /// One strategy's parameters: schema, default and the value in force (for a symbol).
    Show {
        strategy: String,
        /// Show the values for this symbol (per-symbol parameters override the strategy's).
        #[arg(long)]
        symbol: Option<String>,
    },
}

fn show_value(v: Option<Value>) -> String {
    match v {
        Some(Value::Bool(b)) => b.to_string(),
        Some(Value::Int(i)) => i.to_string(),
        Some(Value::Float(f)) => f.to_string(),
        None => "-".into(),
    }
}

pub fn run(args: ParamsArgs) -> anyhow::Result<()> {
    let file = OptimizedFile::load(&args.file)?;
    match args.command {
        ParamsCommand::List => {
            for name in BUILT_IN {
                let (_, status) = file.params_for(name, "");
                let symbols = file.0.get(name).map_or(0, |e| e.symbols.len());
                let extra = if symbols > 0 {
                    format!(", {symbols} symbol(s) with their own values")
                } else {
                    String::new()
                };
                println!("{name:<18} {status}{extra}");
            }
        }
        ParamsCommand::Show { strategy, symbol } => {
            let Some(spec) = schema(&strategy) else {
                bail!(
                    "unknown strategy `{strategy}` (built in: {})",
                    BUILT_IN.join(", ")
                );
            };
            let (params, status) = file.params_for(&strategy, symbol.as_deref().unwrap_or(""));
            println!("{strategy}: {status}");
            println!(
                "{:<18} {:>10} {:>10} {:>20}  meaning",
                "parameter", "value", "default", "range"
            );
            for s in spec {
                let (default, range) = match s.kind {
                    Kind::Int { min, max, default } => {
                        (default.to_string(), format!("{min}..={max}"))
                    }
                    Kind::Float { min, max, default } => {
                        (default.to_string(), format!("{min}..={max}"))
                    }
                    Kind::Bool { default } => (default.to_string(), "true|false".into()),
                };
                let value = params.0.get(s.name).copied();
                let shown = if value.is_some() {
                    show_value(value)
                } else {
                    default.clone()
                };
                println!(
                    "{:<18} {:>10} {:>10} {:>20}  {}",
                    s.name, shown, default, range, s.help
                );
            }
        }
    }
    Ok(())
}
