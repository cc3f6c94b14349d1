//! The upload form of `POST /api/videos`, read with the server's own limits from a body cut
//! into chunks at fuzzed sizes (the first byte). Reading ends in a field list or an error,
//! and never yields more file bytes than the limit.
#![no_main]

use std::sync::LazyLock;

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use tally::http::form::{self, Field, UploadForm};

const MAX: u64 = 64 * 1024;

static RUNTIME: LazyLock<tokio::runtime::Runtime> =
    LazyLock::new(|| tokio::runtime::Builder::new_current_thread().build().expect("a runtime"));

fuzz_target!(|data: &[u8]| {
    let Some((&cut, body)) = data.split_first() else { return };
    let chunk = usize::from(cut).max(1);
    let chunks: Vec<Result<Bytes, std::io::Error>> =
        body.chunks(chunk).map(|c| Ok(Bytes::copy_from_slice(c))).collect();
    let boundary = form::boundary("multipart/form-data; boundary=tallyfuzz").expect("boundary");
    RUNTIME.block_on(async move {
        let mut form = UploadForm::new(futures_util::stream::iter(chunks), boundary, MAX);
        while let Ok(Some(field)) = form.next().await {
            match field {
                Field::Title(title) => assert!(title.len() <= 4096),
                Field::File(mut file) => {
                    while let Ok(Some(_)) = file.chunk().await {}
                    assert!(file.size() <= MAX + 64 * 1024, "read {} bytes", file.size());
                }
            }
        }
    });
});
