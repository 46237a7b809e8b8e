//! `gallop keys set|delete --account ACCT --provider alibaba`: an account's own upstream key
//! (BYOK), read from standard input so it never sits in shell history or a process list. It is
//! sealed with the server secret of the data directory before it is stored.

use std::io::Read;
use std::sync::Arc;

use gallop_server::keys::{KeyVault, MAX_KEY_CHARS, PROVIDERS, checked_key};
use gallop_server::store::JobStore;

use crate::state::StateArgs;
use crate::token::check_account;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: KeysCommand,
}

#[derive(clap::Args)]
struct Target {
    /// The account whose jobs the key pays for.
    #[arg(long)]
    account: String,
    /// Whose key: alibaba (Model Studio).
    #[arg(long)]
    provider: String,
    /// The database (and data directory) of the service that will use the key.
    #[command(flatten)]
    state: StateArgs,
}

#[derive(clap::Subcommand)]
enum KeysCommand {
    /// Store (or replace) the account's key, read from standard input.
    Set(Target),
    /// Remove the account's key; its jobs then use the server's own key, if any.
    Delete(Target),
}

pub fn run(args: Args) -> anyhow::Result<()> {
    match args.command {
        KeysCommand::Set(target) => {
            let store = open(&target)?;
            let mut text = String::new();
            std::io::stdin().read_to_string(&mut text)?;
            let key = checked_key(&text).ok_or_else(|| {
                anyhow::anyhow!(
                    "standard input must hold the key: 1-{MAX_KEY_CHARS} visible characters"
                )
            })?;
            let vault = KeyVault::load_or_create(&target.state.data_dir)?;
            let sealed = vault.seal(&target.account, &target.provider, &key);
            store.put_provider_key(&target.account, &target.provider, &sealed)?;
            println!(
                "Stored the {} key of account {:?} (jobs of this account now use it: keySource BYOK)",
                target.provider, target.account
            );
        }
        KeysCommand::Delete(target) => {
            let store = open(&target)?;
            if !store.delete_provider_key(&target.account, &target.provider)? {
                anyhow::bail!(
                    "account {:?} has no {} key",
                    target.account,
                    target.provider
                );
            }
            println!(
                "Removed the {} key of account {:?}",
                target.provider, target.account
            );
        }
    }
    Ok(())
}

fn open(target: &Target) -> anyhow::Result<Arc<dyn JobStore>> {
    check_account(&target.account)?;
    if !PROVIDERS.contains(&target.provider.as_str()) {
        anyhow::bail!(
            "--provider must be one of {}, got {:?}",
            PROVIDERS.join(", "),
            target.provider
        );
    }
    gallop_server::app::open_store(&target.state.config()?)
}
