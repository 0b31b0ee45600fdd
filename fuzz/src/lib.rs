//! What the fuzz targets share: cutting an input into the reads a socket would deliver.

/// Cuts `data` as reads from a socket would: byte 0's low three bits give the largest
/// read (1 byte to 64 KiB), its other bits seed the sizes below it. Returns the read
/// sizes and the bytes they cover, or `None` for an empty input.
pub fn chunks(data: &[u8]) -> Option<(Vec<usize>, &[u8])> {
    let (&mode, rest) = data.split_first()?;
    let largest = [1usize, 2, 3, 7, 16, 64, 512, 65536][usize::from(mode & 7)];
    let mut state = u32::from(mode >> 3) | 0x9e37_0000;
    let mut sizes = Vec::new();
    let mut left = rest.len();
    while left > 0 {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        let size = (1 + state as usize % largest).min(left);
        sizes.push(size);
        left -= size;
    }
    Some((sizes, rest))
}
