//! `gallop token create --account NAME --data-dir DIR`: a new API token, printed as the last line.

use std::path::PathBuf;

use gallop_server::ServerConfig;
use gallop_server::store::JobStore;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: TokenCommand,
}

#[derive(clap::Subcommand)]
enum TokenCommand {
    /// Create a token bound to an account; only its hash is stored, so it is shown once.
    Create {
        /// The account the token acts for (the `{account_id}` of Cloudflare paths).
        #[arg(long)]
        account: String,
        /// The data directory of the server that will accept the token.
        #[arg(long, default_value = "gallop-data")]
        data_dir: PathBuf,
    },
}

pub fn run(args: Args) -> anyhow::Result<()> {
    match args.command {
        TokenCommand::Create { account, data_dir } => {
            check_account(&account)?;
            let config = ServerConfig {
                data_dir,
                ..ServerConfig::default()
            };
            let store = gallop_server::app::open_store(&config)?;
            let token = store.create_token(&account)?;
            println!("Created a token for account {account:?} (shown only this once):");
            println!("{token}");
            Ok(())
        }
    }
}

/// Accounts appear in URL paths and storage keys: keep them to a safe alphabet.
pub(crate) fn check_account(account: &str) -> anyhow::Result<()> {
    let ok = !account.is_empty()
        && account.len() <= 64
        && account
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !ok {
        anyhow::bail!("--account must be 1-64 characters of A-Z a-z 0-9 - _, got {account:?}");
    }
    Ok(())
}
