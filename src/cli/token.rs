//! `strom token new NAME --file FILE`: makes a token, appends its line (`NAME SHA256`,
//! then its SCRAM keys for Kafka clients) to a server's tokens file (`auth_tokens`),
//! and prints the token, which appears nowhere else.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::output::noteln;
use super::Stop;
use crate::grpc::auth::{file_line_with_scram, new_token};

#[derive(Args)]
pub struct TokenArgs {
    #[command(subcommand)]
    command: TokenCommand,
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Make a token for NAME: its line goes to the tokens file, the token to stdout.
    New {
        /// Who the token is for (one word): the server logs and checks this name.
        name: String,
        /// The tokens file to append to (made, readable by its owner only, if missing).
        #[arg(long, value_name = "FILE")]
        file: PathBuf,
    },
}

pub fn run(args: TokenArgs) -> Result<(), Stop> {
    let TokenCommand::New { name, file } = args.command;
    let failed = |e: String| Stop::Failed(e);
    let token = new_token().map_err(|e| failed(e.to_string()))?;
    let line = file_line_with_scram(&name, &token).map_err(|e| failed(e.to_string()))?;
    let mut tokens = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(&file)
        .map_err(|e| failed(format!("{}: {e}", file.display())))?;
    // A file whose last line has no newline would get this line glued to it.
    let ends_cleanly = std::fs::read(&file)
        .map(|text| text.last().is_none_or(|&b| b == b'\n'))
        .unwrap_or(true);
    let text = match ends_cleanly {
        true => format!("{line}\n"),
        false => format!("\n{line}\n"),
    };
    tokens
        .write_all(text.as_bytes())
        .and_then(|()| tokens.sync_all())
        .map_err(|e| failed(format!("{}: {e}", file.display())))?;
    println!("{token}");
    noteln!(
        "strom: added a token for {name} to {}; SIGHUP to `strom serve` loads it (kill -HUP)",
        file.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_token_is_appended_on_a_line_of_its_own_and_bad_names_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("tokens");
        std::fs::write(&file, "# no newline at the end").unwrap();
        let new = |name: &str| {
            run(TokenArgs {
                command: TokenCommand::New {
                    name: name.into(),
                    file: file.clone(),
                },
            })
        };
        new("orders").unwrap();
        let text = std::fs::read_to_string(&file).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text:?}");
        let fields: Vec<&str> = lines[1].split(' ').collect();
        assert_eq!(fields.len(), 4, "{text:?}");
        assert!(fields[0] == "orders" && fields[1].len() == 64, "{text:?}");
        assert!(fields[2].starts_with("SCRAM-SHA-256=4096:"), "{text:?}");
        assert!(fields[3].starts_with("SCRAM-SHA-512=4096:"), "{text:?}");
        // The file reads back as a tokens file.
        crate::grpc::auth::Tokens::load(&file).unwrap();
        for bad in ["", "two words", "#comment"] {
            assert!(matches!(new(bad), Err(Stop::Failed(m)) if m.contains("cannot name a token")));
        }
        assert_eq!(std::fs::read_to_string(&file).unwrap(), text);
    }
}
