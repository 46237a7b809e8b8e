//! `gallop token create --account NAME --data-dir DIR`: a new API token, printed as the last line.

use crate::state::StateArgs;

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
        /// The database (and data directory) of the service that will accept the token.
        #[command(flatten)]
        state: StateArgs,
    },
}

pub fn run(args: Args) -> anyhow::Result<()> {
    match args.command {
        TokenCommand::Create { account, state } => {
            check_account(&account)?;
            let store = gallop_server::app::open_store(&state.config()?)?;
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
