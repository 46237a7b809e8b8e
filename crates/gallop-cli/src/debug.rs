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
    /// Write frames of an MP4 as PNG files (to look at what users see).
    Frames {
        #[arg(long)]
        video: PathBuf,
        /// Folder for frame_00000.png, ... (created if missing).
        #[arg(long)]
        out: PathBuf,
        /// Keep every Nth frame, starting with the first.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
        every: u32,
    },
}

pub fn run(args: Args) -> anyhow::Result<()> {
    match args.command {
        DebugCommand::Forward {
            component,
            model_dir,
            inputs,
            output,
        } => Ok(gallop_wan::debug::forward(
            &component, &model_dir, &inputs, &output,
        )?),
        DebugCommand::Frames { video, out, every } => write_frames(&video, &out, every as usize),
    }
}

fn write_frames(
    video: &std::path::Path,
    out: &std::path::Path,
    every: usize,
) -> anyhow::Result<()> {
    use anyhow::Context;
    let bytes = std::fs::read(video)
        .with_context(|| format!("--video: cannot read {}", video.display()))?;
    let decoded = gallop_media::decode_mp4(&bytes)
        .with_context(|| format!("--video: {} is not an H.264 MP4", video.display()))?;
    std::fs::create_dir_all(out)
        .with_context(|| format!("--out: cannot create {}", out.display()))?;
    let mut written = 0;
    for (i, frame) in decoded.frames.iter().enumerate().step_by(every) {
        let path = out.join(format!("frame_{i:05}.png"));
        frame
            .save(&path)
            .with_context(|| format!("writing {}", path.display()))?;
        written += 1;
    }
    println!(
        "wrote {written} of {} frames ({}x{}) to {}",
        decoded.frames.len(),
        decoded.width,
        decoded.height,
        out.display()
    );
    Ok(())
}
