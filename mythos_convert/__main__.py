from mythos_convert.cli import main

main()
