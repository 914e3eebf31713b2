from edge_asr.cli import main

main()
