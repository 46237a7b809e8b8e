//! The optional encoder through the system's ffmpeg (libx264): the same MP4 contract as the
//! built-in one, read back by gallop's own reader and decoder, and the worst-block guard of the
//! benchmark's clips. Needs `ffmpeg` with libx264 on the PATH (`.ci/run` installs it).

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use gallop_media::{Ffmpeg, MediaError, Mp4Encoder, VideoEncoder, decode_mp4};

use crate::common;
use crate::mp4_roundtrip::{assert_clean_blocks, encode_with, roundtrip_with, sequence_parameters};

fn ffmpeg() -> VideoEncoder {
    let ffmpeg = Ffmpeg::probe("ffmpeg")
        .expect("ffmpeg with libx264 on the PATH: apt-get install -y ffmpeg (.ci/run does)");
    VideoEncoder::Ffmpeg(ffmpeg)
}

#[test]
fn ffmpeg_encoder_keeps_the_mp4_contract() {
    roundtrip_with(&ffmpeg(), 320, 240, 24);
    // Portrait, another rate: the reader sees the size, the rate and every frame.
    let frames: Vec<_> = (0..10)
        .map(|i| common::pattern_frame(144, 256, i))
        .collect();
    let video = decode_mp4(&encode_with(&ffmpeg(), &frames, 30)).unwrap();
    assert_eq!(
        (video.width, video.height, video.frames.len()),
        (144, 256, 10)
    );
    assert!((video.fps - 30.0).abs() < 0.01, "fps {}", video.fps);
}

#[test]
fn ffmpeg_stream_is_tagged_bt601_limited_range() {
    let frames: Vec<_> = (0..2).map(|i| common::pattern_frame(64, 48, i)).collect();
    let sps = sequence_parameters(&encode_with(&ffmpeg(), &frames, 24));
    assert_eq!(sps.profile, 100, "x264 makes High profile");
    assert_eq!(sps.width, 64);
    assert_eq!(sps.full_range, Some(false), "limited range");
    assert_eq!(sps.colour, Some((6, 6, 6)), "SMPTE 170M (BT.601)");
}

#[test]
fn ffmpeg_keyframes_come_at_least_every_two_seconds() {
    let frames: Vec<_> = (0..100).map(|i| common::pattern_frame(96, 64, i)).collect();
    let mp4 = encode_with(&ffmpeg(), &frames, 24);
    let mut reader =
        mp4::Mp4Reader::read_header(std::io::Cursor::new(&mp4), mp4.len() as u64).unwrap();
    let track_id = *reader.tracks().keys().next().unwrap();
    assert_eq!(reader.sample_count(track_id).unwrap(), 100);
    let mut sync = Vec::new();
    let mut duration = None;
    for id in 1..=100 {
        let sample = reader.read_sample(track_id, id).unwrap().unwrap();
        // Every frame lasts as long as the first: a constant 24 fps.
        assert_eq!(*duration.get_or_insert(sample.duration), sample.duration);
        if sample.is_sync {
            sync.push(id);
        }
    }
    assert_eq!(sync[0], 1, "the video starts on a keyframe: {sync:?}");
    let gaps = sync
        .windows(2)
        .map(|w| w[1] - w[0])
        .chain([101 - sync[sync.len() - 1]]);
    assert!(gaps.into_iter().all(|g| g <= 48), "keyframes {sync:?}");
}

#[test]
fn ffmpeg_moving_saturated_edges_and_texture_keep_clean_blocks() {
    assert_clean_blocks(&ffmpeg());
}

/// Writes an executable shell script standing in for an ffmpeg build.
fn script(dir: &Path, name: &str, body: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

#[test]
fn an_ffmpeg_that_cannot_run_or_lacks_libx264_is_refused_at_probe() {
    let err = Ffmpeg::probe("/nonexistent/ffmpeg").unwrap_err();
    assert!(
        matches!(err, MediaError::FfmpegUnavailable { .. }),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .starts_with("cannot run ffmpeg /nonexistent/ffmpeg: "),
        "{err}"
    );

    // A build without libx264 lists other encoders only.
    let dir = tempfile::tempdir().unwrap();
    let without = script(
        dir.path(),
        "ffmpeg-lgpl",
        "echo ' V....D libopenh264          OpenH264 H.264'; echo ' V....D mpeg4  MPEG-4 part 2'",
    );
    let err = Ffmpeg::probe(&without).unwrap_err();
    assert_eq!(
        err,
        MediaError::FfmpegWithoutX264 {
            program: without.display().to_string()
        }
    );
    assert!(err.to_string().contains("--enable-libx264"), "{err}");
}

#[test]
fn an_ffmpeg_that_fails_while_encoding_reports_its_own_words() {
    let dir = tempfile::tempdir().unwrap();
    let failing = script(
        dir.path(),
        "ffmpeg",
        "case \"$*\" in *-encoders*) echo ' V....D libx264  libx264 H.264'; exit 0;; esac\n\
         echo 'Error initializing output stream: out of licences' >&2; exit 1",
    );
    let encoder = VideoEncoder::Ffmpeg(Ffmpeg::probe(&failing).unwrap());
    let mut mp4 = Mp4Encoder::with_encoder(&encoder, 64, 48, 24).unwrap();
    // The pipe may take a frame or two before ffmpeg is gone; the error comes by finish.
    let frame = common::pattern_frame(64, 48, 0);
    let err = (0..4)
        .find_map(|_| mp4.push(&frame).err())
        .or_else(|| mp4.finish().err())
        .expect("a failing ffmpeg fails the video");
    let text = err.to_string();
    assert!(text.starts_with("ffmpeg failed: "), "{text}");
    assert!(text.contains("out of licences"), "{text}");
}
