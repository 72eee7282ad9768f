"""Run PySceneDetect on one video in its own virtual environment (called by benchmarks/shots.py).

    <bench-venv>/bin/python benchmarks/_scenedetect_runner.py VIDEO DETECTOR

Prints one JSON line: {"cuts": [frame, ...], "cut_times": [s, ...], "frames": n, "cpu_s": ..., "wall_s": ...}.
Detectors run with their defaults. Kept free of kfr_spark imports: this interpreter has scenedetect (and the
opencv-python it pulls in), not the project's environment.
"""

import json
import sys
import time


def main() -> int:
    path, name = sys.argv[1], sys.argv[2]
    from scenedetect import AdaptiveDetector, ContentDetector, SceneManager, open_video

    detector = {"ContentDetector": ContentDetector, "AdaptiveDetector": AdaptiveDetector}[name]()
    wall0, cpu0 = time.perf_counter(), time.process_time()
    video = open_video(path, backend="opencv")
    manager = SceneManager()
    manager.add_detector(detector)
    frames = manager.detect_scenes(video, show_progress=False)
    scenes = manager.get_scene_list(start_in_scene=True)
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    cuts = [s[0].get_frames() for s in scenes[1:]]
    times = [s[0].get_seconds() for s in scenes[1:]]
    print(json.dumps({"cuts": cuts, "cut_times": times, "frames": frames, "cpu_s": cpu, "wall_s": wall}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
