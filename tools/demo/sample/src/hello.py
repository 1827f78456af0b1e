print("hello from inside an ext2 image")
