/* A GStreamer "decoder" that misbehaves on purpose, for tests/faults.rs: it claims H.264
 * above every real decoder, and on its first buffer it crashes (SIGSEGV) or, with
 * FAULT_PLUGIN_MODE=hang, never returns. Built at test time; loaded only through
 * GST_PLUGIN_PATH with a private GST_REGISTRY, so no other process ever sees it. */
#include <gst/gst.h>

#define PACKAGE "tallyfault"

typedef struct { GstElement parent; GstPad *sink, *src; } FaultDec;
typedef struct { GstElementClass parent_class; } FaultDecClass;

G_DEFINE_TYPE(FaultDec, fault_dec, GST_TYPE_ELEMENT)

static GstStaticPadTemplate sink_template =
    GST_STATIC_PAD_TEMPLATE("sink", GST_PAD_SINK, GST_PAD_ALWAYS, GST_STATIC_CAPS("video/x-h264"));
static GstStaticPadTemplate src_template =
    GST_STATIC_PAD_TEMPLATE("src", GST_PAD_SRC, GST_PAD_ALWAYS, GST_STATIC_CAPS("video/x-raw"));

static GstFlowReturn fault_chain(GstPad *pad, GstObject *parent, GstBuffer *buffer) {
  const gchar *mode = g_getenv("FAULT_PLUGIN_MODE");
  if (mode != NULL && g_str_equal(mode, "hang")) {
    for (;;) g_usleep(G_USEC_PER_SEC);
  }
  /* A real fault, not raise(): Rust's runtime handles a raised SIGSEGV and returns. */
  *(volatile int *)NULL = 42;
  gst_buffer_unref(buffer);
  return GST_FLOW_ERROR;
}

static gboolean fault_event(GstPad *pad, GstObject *parent, GstEvent *event) {
  /* Swallow the caps, so the first buffer reaches the chain function. */
  if (GST_EVENT_TYPE(event) == GST_EVENT_CAPS) {
    gst_event_unref(event);
    return TRUE;
  }
  return gst_pad_event_default(pad, parent, event);
}

static void fault_dec_init(FaultDec *self) {
  self->sink = gst_pad_new_from_static_template(&sink_template, "sink");
  gst_pad_set_chain_function(self->sink, fault_chain);
  gst_pad_set_event_function(self->sink, fault_event);
  gst_element_add_pad(GST_ELEMENT(self), self->sink);
  self->src = gst_pad_new_from_static_template(&src_template, "src");
  gst_element_add_pad(GST_ELEMENT(self), self->src);
}

static void fault_dec_class_init(FaultDecClass *klass) {
  GstElementClass *element = GST_ELEMENT_CLASS(klass);
  gst_element_class_set_static_metadata(element, "Faulty H.264 decoder", "Codec/Decoder/Video",
                                        "Crashes or hangs on its first buffer (tests only)", "Tally");
  gst_element_class_add_static_pad_template(element, &sink_template);
  gst_element_class_add_static_pad_template(element, &src_template);
}

static gboolean plugin_init(GstPlugin *plugin) {
  return gst_element_register(plugin, "faulth264dec", GST_RANK_PRIMARY + 1000, fault_dec_get_type());
}

GST_PLUGIN_DEFINE(GST_VERSION_MAJOR, GST_VERSION_MINOR, tallyfault, "Faulty elements for Tally's tests",
                  plugin_init, "1.0", "LGPL", PACKAGE, "https://example.invalid/tally")
