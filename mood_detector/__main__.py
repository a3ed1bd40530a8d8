from mood_detector.cli import main

main()
