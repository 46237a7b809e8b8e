//! Image decoding with limits, EXIF orientation, fit-and-crop, the watermark, H.264 in MP4.
