from mood_detector.cli import entry

entry()
