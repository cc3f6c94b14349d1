// What the browser tests do with the page's player (tests/js/browser.mjs, playback.mjs).

/** Plays the loaded video muted until time advances, then seeks; returns what happened. */
export async function playAndSeek(page, to) {
  return page.$eval(
    "#player-video",
    async (video, to) => {
      video.muted = true;
      await video.play();
      const start = performance.now();
      while (video.currentTime < 0.3 && performance.now() - start < 10000) await new Promise((r) => setTimeout(r, 50));
      const played = video.currentTime;
      video.pause();
      const seeked = new Promise((resolve) => video.addEventListener("seeked", resolve, { once: true }));
      video.currentTime = to;
      await seeked;
      return { played, seekedTo: video.currentTime, videoWidth: video.videoWidth, src: video.currentSrc };
    },
    to,
  );
}
