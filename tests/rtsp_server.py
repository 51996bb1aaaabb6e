"""A real RTSP server on 127.0.0.1 for the webcam tests, run by the SYSTEM python3 (it needs
python3-gi and gir1.2-gst-rtsp-server-1.0 from apt, which no venv has).

    /usr/bin/python3 tests/rtsp_server.py --image PHOTO [--frames N] [--fps F] [--port P]

Streams PHOTO as H.264 at F frames per second under rtsp://127.0.0.1:PORT/test; each client gets
its own stream of N frames (-1: endless), then end of stream. Prints ``READY <port>`` once it
listens; SIGTERM or SIGINT stops it.
"""
import argparse
import signal
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402


def launch_line(image: str, frames: int, fps: int, width: int, height: int) -> str:
    return (
        "( filesrc location=\"%s\" ! decodebin ! videoconvert ! videoscale ! "
        "video/x-raw,width=%d,height=%d ! imagefreeze is-live=true num-buffers=%d ! "
        "video/x-raw,framerate=%d/1 ! videoconvert ! "
        "x264enc tune=zerolatency speed-preset=ultrafast key-int-max=%d ! "
        "rtph264pay name=pay0 pt=96 config-interval=1 )" % (image, width, height, frames, fps, fps))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--image", required=True)
    parser.add_argument("--frames", type=int, default=-1)
    parser.add_argument("--fps", type=int, default=25)
    parser.add_argument("--width", type=int, default=320)
    parser.add_argument("--height", type=int, default=240)
    parser.add_argument("--port", type=int, default=0, help="0: any free port")
    args = parser.parse_args()

    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(args.port))
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(launch_line(args.image, args.frames, args.fps, args.width, args.height))
    factory.set_shared(False)
    server.get_mount_points().add_factory("/test", factory)
    if server.attach(None) == 0:
        sys.exit("cannot listen on 127.0.0.1:%d" % args.port)

    loop = GLib.MainLoop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, sig, loop.quit)
    print("READY %d" % server.get_bound_port(), flush=True)
    loop.run()


if __name__ == "__main__":
    main()
