use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: DebugCommand,
}

#[derive(clap::Subcommand)]
enum DebugCommand {
    /// Run one component forward on named tensors, as the golden fixtures do.
    Forward {
        /// transformer | vae-encode | vae-decode | text-encoder | image-encoder
        #[arg(long)]
        component: String,
        /// Folder with the component's config.json and safetensors weights.
        #[arg(long)]
        model_dir: PathBuf,
        #[arg(long)]
        inputs: PathBuf,
        #[arg(long)]
        output: PathBuf,
    },
}

pub fn run(args: Args) -> anyhow::Result<()> {
    match args.command {
        DebugCommand::Forward {
            component,
            model_dir,
            inputs,
            output,
        } => gallop_wan::debug::forward(&component, &model_dir, &inputs, &output),
    }
}
